"""The program's default network as a plain PyTorch loop, written the way pytorch/examples' mnist/main.py is.

    python benchmarks/pytorch_baseline.py                         # 10 epochs, the GPU if there is one
    python benchmarks/pytorch_baseline.py --device cpu --epochs 2
    python benchmarks/pytorch_baseline.py --limit-train 1000 --limit-test 500 --epochs 1   # a quick check

What a user who trains on a GPU would otherwise pick: the same network (Conv2D 32 3x3 ReLU -> MaxPool 2
-> Conv2D 64 3x3 ReLU -> MaxPool 2 -> Flatten -> Dense 100 ReLU -> Dense 10, 179,926 parameters), the
same data (the bundled MNIST, read by digits.data, which needs no Keras), the same epochs (10), batch
size (128) and per-epoch pass over the test images, Adam at its default rate (the original Keras
example's optimizer; the program itself uses a cosine schedule). The images stay uint8 tensors on the
device and are scaled per batch, as the program does in its compiled step; no DataLoader, whose worker
processes would only copy what is already in memory. It prints seconds per epoch (each including the
test pass, as the program's do), the end-to-end seconds (from before `import torch` to the end) and the
test accuracy, and with --output-dir writes metrics.json in the program's form.
"""

import time

STARTED = time.perf_counter()  # end to end counts importing torch, as the program's counts loading Keras

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from digits.data import load_mnist  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.fc1 = nn.Linear(64 * 5 * 5, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # 28 -> 26 -> 13
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 13 -> 11 -> 5
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def train(args, model, images, labels, optimizer, epoch):
    model.train()
    order = torch.randperm(len(images), device=images.device)
    total = torch.zeros((), device=images.device)
    for batch_idx, start in enumerate(range(0, len(images), args.batch_size)):
        index = order[start:start + args.batch_size]
        data, target = images[index].float() / 255, labels[index]
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)
        if args.log_interval and batch_idx % args.log_interval == 0:
            print(f"Train Epoch: {epoch} [{start}/{len(images)} ({100 * start / len(images):.0f}%)]\t"
                  f"Loss: {loss.item():.6f}", flush=True)
    return total.item() / len(images)


def test(model, images, labels, batch_size):
    model.eval()
    loss, correct = torch.zeros((), device=images.device), torch.zeros((), device=images.device)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            output = model(images[start:start + batch_size].float() / 255)
            target = labels[start:start + batch_size]
            loss += F.nll_loss(output, target, reduction="sum")
            correct += (output.argmax(dim=1) == target).sum()
    return loss.item() / len(images), correct.item() / len(images)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where to train (default: cuda if PyTorch sees a GPU, else cpu)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train (default: 10)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    parser.add_argument("--test-batch-size", type=int, default=1000, help="test batch size (default: 1000)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (default: 1e-3, Adam's own)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: none, a fresh run each time)")
    parser.add_argument("--limit-train", type=int, default=None, help="train on the first N images (default: all)")
    parser.add_argument("--limit-test", type=int, default=None, help="test on the first N images (default: all)")
    parser.add_argument("--log-interval", type=int, default=100, help="batches between loss lines (0: none)")
    parser.add_argument("--output-dir", type=Path, default=None, help="write metrics.json here (default: nowhere)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no GPU here; pass --device cpu")
    if args.seed is not None:
        torch.manual_seed(args.seed)
    device = torch.device(args.device)
    name = f"GPU ({torch.cuda.get_device_name(device)})" if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"

    mnist = load_mnist("bundled")
    x_train = torch.from_numpy(mnist.x_train[: args.limit_train, None]).to(device)  # uint8 (N, 1, 28, 28)
    y_train = torch.from_numpy(mnist.y_train[: args.limit_train]).long().to(device)
    x_test = torch.from_numpy(mnist.x_test[: args.limit_test, None]).to(device)
    y_test = torch.from_numpy(mnist.y_test[: args.limit_test]).long().to(device)
    print(f"PyTorch {torch.__version__}, device: {name}; {len(x_train):,} training and {len(x_test):,} test images")

    model = Net().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    history = {"loss": [], "val_loss": [], "val_accuracy": [], "epoch_seconds": []}
    train_started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        epoch_started = time.perf_counter()
        train_loss = train(args, model, x_train, y_train, optimizer, epoch)
        test_loss, accuracy = test(model, x_test, y_test, args.test_batch_size)  # .item() waits for the GPU
        seconds = time.perf_counter() - epoch_started
        for key, value in zip(history, (train_loss, test_loss, accuracy, round(seconds, 3))):
            history[key].append(value)
        print(f"Epoch {epoch}: {seconds:.2f} s, train loss {train_loss:.4f}, test loss {test_loss:.4f}, "
              f"test accuracy {accuracy:.4f}", flush=True)
    train_seconds = time.perf_counter() - train_started
    duration = time.perf_counter() - STARTED
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if args.device == "cuda" else None

    steady = sorted(history["epoch_seconds"][1:])
    print(f"Seconds per epoch: first {history['epoch_seconds'][0]:.2f}"
          + (f", then {steady[len(steady) // 2]:.2f} (median)" if steady else ""))
    print(f"End to end: {duration:.1f} s (training {train_seconds:.1f} s)")
    print(f"Test accuracy: {history['val_accuracy'][-1]:.4f}")
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {"test_accuracy": history["val_accuracy"][-1], "test_loss": history["val_loss"][-1],
                   "epochs_completed": args.epochs, "history": history, "train_seconds": round(train_seconds, 2),
                   "duration_seconds": round(duration, 2), "peak_gpu_memory_mb": peak,
                   "config": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "backend": "pytorch loop", "device": name, "precision": "float32",
                              "parameters": sum(p.numel() for p in model.parameters())}}
        (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
