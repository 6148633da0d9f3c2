"""Train a small convolutional network on MNIST, then show how well it did and where it goes wrong.

    python handwritten_digit_classification.py                 # train 10 epochs, write outputs/
    python handwritten_digit_classification.py --predict my_digit.jpg
    python handwritten_digit_classification.py --draw          # draw digits in the browser

The network is Conv2D(32) -> MaxPool -> Conv2D(64) -> MaxPool -> Dense(100) -> Dense(10), 179,926
parameters, trained with Adam on the copy of MNIST bundled in data/mnist/ (no internet needed).
The run prints the test accuracy and writes to outputs/: confusion_matrix.png, training_curves.png,
misclassified.png, filters.png, model.keras and metrics.json. Keras alone: any backend runs it.

This file is the story of a run, top to bottom: read the command line, load the data, build the
network, choose the precision, train, evaluate, save the reports. The parts live in digits/, one
job a module. Keras loads only after the command line has been read, so --help answers at once.
"""

import errno
import functools
import os
import shlex
import sys
import time
from pathlib import Path

from digits import adapt, data, outputs
from digits.backend import load_keras
from digits.cli import option_named, parse_args
from digits.errors import InputError, printable
from digits.signals import stop_on_signals


def main(argv=None):
    """Read the command line, then train (the default) or what a mode asks: --predict, --draw, --evaluate, --adapt."""
    args = parse_args(argv)
    if args.adapt:
        return adapt.run(args, load_model)
    if args.predict:
        return predict(args)
    if args.draw:
        return draw(args)
    if args.evaluate:
        return evaluate_yours(args)
    return train_and_report(args)


def train_and_report(args):
    """Train the network on MNIST, evaluate it on the test images, save the pictures and the model."""
    started = time.perf_counter()
    with option_named("--output-dir"):
        outputs.check_output_dir(args.output_dir)

    # 1. Data: uint8 (N, 28, 28) images, int32 labels.
    with option_named("--data"):
        mnist = data.load_mnist(args.data)
    x_train, y_train = mnist.x_train[: args.limit_train], mnist.y_train[: args.limit_train]
    x_test, y_test = mnist.x_test[: args.limit_test], mnist.y_test[: args.limit_test]
    with option_named("--validation-split"):
        x_train, y_train, x_val, y_val = data.split_validation(x_train, y_train, args.validation_split)
    held_out = f", {len(x_val):,} held out for validation" if len(x_val) else ""
    print(f"Data: {printable(mnist.source)}: {len(x_train):,} training{held_out} and {len(x_test):,} test images")

    # Keras loads only now, quietly: TensorFlow's start-up logs would bury the program's own output.
    keras = load_keras()
    from digits import backend, evaluation, networks, pictures, precision, training
    from digits.settings import steps_per_epoch

    # 2. Precision: float32 or bfloat16 mixed precision, timed on a batch where the device does not tell.
    build = functools.partial(networks.build_network, args.network)
    batch = x_train[: args.batch_size, ..., None], y_train[: args.batch_size]
    chosen = precision.choose_precision(args.precision, build, *batch, network=f"{args.network}, batch {len(batch[0])}")
    measured = ""
    if chosen.timings:
        measured = (f" ({'remembered: ' * chosen.remembered}measured {precision.describe(chosen.timings)}"
                    + (f"; delete {precision.cache_path()} to measure again)" if chosen.remembered else ")"))
    print(f"Backend: {keras.backend.backend()}, device: {chosen.device}, precision: {chosen.name}{measured}")
    if args.seed is not None:  # after the timing above, so that it does not shift the random numbers
        backend.seed_everything(args.seed)

    # 3. The network, and the trainer around it: uint8 pixels in, scaled (and augmented) inside the step.
    model = build()
    networks.print_summary(model)  # as wide as the terminal, 100 columns in a log
    trainer = training.make_trainer(model, args.augment, args.seed)
    optimizer = training.make_optimizer(args.lr_schedule, args.learning_rate, args.epochs,
                                        steps_per_epoch(len(x_train), args.batch_size))
    # The run's outputs go into a hidden staging folder (TensorBoard's logs during training), and are
    # published together at the end, or not at all: a run that fails leaves output_dir as it was.
    with outputs.staging_folder(args.output_dir) as staging:
        callbacks = []
        if args.tensorboard:  # into the staging folder: the earlier logs stay until the run publishes
            with option_named("--tensorboard", ", or drop --tensorboard"):
                callbacks.append(backend.tensorboard_callback(staging / "logs"))

        # 4. Train, watching the validation images (or the test images) after every epoch for the curves.
        watched = "validation" if len(x_val) else "test"
        x_watch, y_watch = (x_val, y_val) if len(x_val) else (x_test, y_test)
        train_started = time.perf_counter()
        fit = training.train(trainer, (x_train[..., None], y_train), (x_watch[..., None], y_watch),
                             args.epochs, args.batch_size, optimizer, callbacks, watched)
        train_seconds = time.perf_counter() - train_started
        epochs = f"{fit.epochs_completed} epoch{'s' * (fit.epochs_completed != 1)}"
        startup = None if fit.first_steps_at is None else round(fit.first_steps_at - started, 2)
        each = fit.history["epoch_seconds"]
        spent = f"{train_seconds:.1f} s" + (f" ({min(each):.1f}-{max(each):.1f} s an epoch)" if each else "")
        print((f"Stopped {fit.stopped_where()}: {spent} of training" if fit.interrupted else
               f"Trained {epochs} in {spent}") + (
            f"; the first steps ran {startup:.1f} s after the start" if startup is not None else ""))
        model = precision.float32_network(model, build)  # evaluated and saved in float32, whatever it trained in

        # 5. Evaluate: predict every test image once; every number below comes from those predictions.
        result = evaluation.evaluate(model, x_test, y_test)
        per_class = evaluation.per_class_report(result.confusion)
        confused = evaluation.most_confused(result.confusion)
        config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
                  if key not in ("predict", "model", "draw", "port", "host", "network", "evaluate", "collect")}
        metrics = {
            "test_accuracy": result.accuracy,
            "test_loss": result.loss,
            "interrupted": fit.interrupted,
            "epochs_completed": fit.epochs_completed,
            "curves_watch": watched,
            "history": fit.history,
            "per_class": per_class,
            "most_confused": confused,
            "confusion_matrix": result.confusion.tolist(),
            "config": {**config, "precision": chosen.name, "precision_timings": chosen.timings,
                       "precision_remembered": chosen.remembered,
                       "backend": keras.backend.backend(), "device": chosen.device,
                       "parameters": model.count_params()},
            "data": {"source": mnist.source, "train_images": len(x_train), "validation_images": len(x_val),
                     "test_images": len(x_test)},
            "startup_seconds": startup,  # from the start to the end of the first training steps, tracing included
            "train_seconds": round(train_seconds, 2),
            "duration_seconds": round(time.perf_counter() - started, 2),
        }

        # 6. Reports: written into the staging folder, then published together.
        reports = [  # name, how to write it
            ("model.keras", lambda p: backend.save_model(model, p)),
            ("confusion_matrix.png",
             lambda p: pictures.plot_confusion_matrix(result.confusion, result.accuracy, p)),
            ("training_curves.png", (lambda p: pictures.plot_training_curves(fit.history, watched, p))
                                    if fit.history["loss"] else None),  # stopped in epoch 1: no curve to draw
            ("misclassified.png", lambda p: pictures.plot_misclassified(x_test, y_test, result, p)),
            ("filters.png", lambda p: pictures.plot_filters(model, data.preprocess(x_test[:1])[0], p)),
            ("metrics.json", lambda p: outputs.write_json(metrics, p)),
            ("logs", (lambda p: p.mkdir(exist_ok=True)) if args.tensorboard else None),  # written in training
        ]
        print(evaluation.format_report(per_class, confused))
        print(f"Test accuracy: {result.accuracy:.4f}")
        print(f"Test loss: {result.loss:.4f}")
        try:  # a stopped run apart, in interrupted/; a finished one in place, keeping the one it replaces
            written = outputs.write_outputs(reports, staging)
            published = outputs.publish(staging, args.output_dir, written, *(
                ((), "interrupted") if fit.interrupted else ([name for name, _ in reports], None)))
        except outputs.NotSaved as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print("Saved: " + ", ".join(printable(f"{path}{os.sep * path.is_dir()}") for path in published.done))
    if fit.interrupted:
        print(f"Interrupted {fit.stopped_where()}: saved what was trained in "
              f"{printable(args.output_dir / 'interrupted')}{os.sep}; nothing else in "
              f"{printable(args.output_dir)}{os.sep} changed.")
        return 130
    if published.previous:
        print(outputs.replaced(args.output_dir, published.previous, result.accuracy))
    return 0


def load_model(args):
    """The trained model --predict and --draw use, or a one-line refusal that says how to get one."""
    from digits.predict import load_trained_model

    path = args.model or args.output_dir / "model.keras"
    folder = path.parent if path.name == "model.keras" else Path("DIR")
    command = f"python {Path(__file__).name}" + ("" if folder == Path("outputs") else
                                                 f" --output-dir {shlex.quote(str(folder))}")
    then = "" if path.name == "model.keras" else " and pass --model DIR/model.keras"
    with option_named("--model" if args.model else None, f": train one with `{command}`{then}, or pass --model PATH"):
        return load_trained_model(path)


def load_number_reader(args):
    """The number reader --predict and --draw read numbers with (shipped in models/), or a one-line refusal."""
    from digits.reader import READER_FILE, load_reader

    with option_named("--reader" if args.reader else None):
        return load_reader(args.reader or READER_FILE)


def predict(args):
    """--predict: read the number in each image, then save predictions.png; exit 1 if any failed."""
    nothing_to_read(args.predict)  # told before Keras loads, which takes a while
    model, reader = load_model(args), load_number_reader(args)
    from digits import pictures
    from digits.predict import predict_images

    run = predict_images(model, args.predict, reader)
    saved = True
    if run.results:
        with option_named("--output-dir"):
            outputs.check_output_dir(args.output_dir)
        try:
            with outputs.staging_folder(args.output_dir) as staging:
                written = outputs.write_outputs([("predictions.png",
                                                  lambda p: pictures.plot_predictions(run.results, p))], staging)
                print(f"Saved: {printable(outputs.publish(staging, args.output_dir, written).done[0])}")
        except outputs.NotSaved as e:
            print(f"error: {e}", file=sys.stderr)
            saved = False
    return 1 if run.failed or not saved else 0


def nothing_to_read(paths):
    """Refuse --predict when no path can be an image file (missing, a folder, a FIFO...), judged by
    stat alone; where one can, each of the others gets its line in its place, as an image that fails."""
    from digits.files import check_regular

    problems = []
    for path in paths:
        try:
            return check_regular(path, "an image")
        except InputError as e:
            problems.append(e)
    path, more = Path(paths[0]), (f" (and {len(paths) - 1} more that cannot be read)" if len(paths) > 1 else "")
    if path.is_dir():
        raise InputError(f"--predict: {path} is a folder: to read the images in it, pass {shlex.quote(str(path))}/*; "
                         f"for labelled digits in {path}/0/ ... {path}/9/, use --evaluate {shlex.quote(str(path))}"
                         f"{more}")
    check = "" if os.path.lexists(path) else ": check the name"
    raise InputError(f"--predict: {path}: {problems[0]}{check}{more}")


def evaluate_yours(args):
    """--evaluate: measure the trained model on your own labelled digits, DIR/0/ ... DIR/9/."""
    from digits import folders

    with option_named("--evaluate"):  # the layout and its bounds first: answered before Keras loads
        files = folders.list_labelled(args.evaluate)
    # Its own folder beside a training run's outputs, whose heatmap and metrics.json it would replace.
    report_dir = args.output_dir / f"evaluate-{args.evaluate.resolve().name}"
    with option_named("--output-dir"):
        outputs.check_output_dir(report_dir)
    model = load_model(args)
    from digits.your_digits import measure, report

    with option_named("--evaluate"):
        measured = measure(model, args.evaluate, files, args.model or args.output_dir / "model.keras")
    return report(measured, report_dir)


def draw(args):
    """--draw: serve the drawing page until Ctrl-C; with --collect, save the drawings the user labels."""
    from digits.server import DrawingPageServer

    collection = None
    if args.collect:
        from digits.collect import Collection

        with option_named("--collect"):
            collection = Collection(args.collect)
    try:  # bound before Keras loads, which takes a while: a port in use is told at once
        server = DrawingPageServer((args.host, args.port), None, collection)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {args.port} is already in use on {args.host}: "
                             f"pass another, e.g. --port {args.port + 1 if args.port < 65535 else 8001}")
        raise InputError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e}): check --host and --port")
    if not server.names.loopback:  # 127.0.0.0/8 and ::1 are this machine's alone
        print(f"warning: --host {printable(args.host)}: the drawing page is reachable from other machines on "
              "the network", file=sys.stderr, flush=True)
    try:
        # the models load now; requests wait in the queue until serve_forever
        server.model, server.reader = load_model(args), load_number_reader(args)
        server.warm_up()
        try:  # from the moment the address is printed, Ctrl-C stops the page cleanly
            if collection is not None:
                print(printable(f"Saving the drawings you label to {args.collect}/<digit>/ "
                                f"(then: --adapt {args.collect}, or --evaluate {args.collect})"), flush=True)
            print(f"Drawing page: {server.names.url()} (press Ctrl-C to stop)", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            print("Stopped the drawing page.", flush=True)
    finally:
        server.server_close()
    return 0


def run(argv=None):
    """The program as its command line runs it: main(argv), with a refusal (bad input, a missing
    file...) told in one line and exit status 2 rather than a traceback. The tests call it in their process."""
    try:
        return main(argv)
    except InputError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    stop_on_signals()  # a plain kill stops cleanly, like Ctrl-C
    try:
        sys.exit(run())
    except KeyboardInterrupt:
        print("\nInterrupted: stopped at once, nothing new was saved.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # skip interpreter teardown: it can crash while the backend's threads run
