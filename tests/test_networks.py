"""The networks are exactly the ones specified: layer kinds, shapes and parameter counts worked out by hand."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import bundled_mnist
from PIL import Image

from digits import data, errors, networks, pictures, settings


def build(architecture="cnn", filters=None, dense_units=None):
    """The network of these settings, checked as the command line checks them."""
    return networks.build_network(settings.network_spec(architecture, filters, dense_units))


def conv(size, channels_in, channels_out, bias=True):
    return size * size * channels_in * channels_out + (channels_out if bias else 0)


def dense(units_in, units_out):
    return units_in * units_out + units_out


def batch_norm(channels):
    return 4 * channels  # scale, offset, moving mean, moving variance


def kinds(model):
    return [type(layer).__name__ for layer in model.layers]


def test_default_cnn_is_the_original_examples_network():
    model = networks.build_cnn()
    assert model.name == "mnist_cnn"
    assert kinds(model) == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [(None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64), (None, 5, 5, 64),
                      (None, 1600), (None, 100), (None, 10)]
    assert [layer.count_params() for layer in model.layers] == [320, 0, 18496, 0, 0, 160100, 1010]
    assert model.count_params() == 179_926
    assert build("cnn").count_params() == 179_926  # None settings: the original example's


@pytest.mark.parametrize(("filters", "dense_units", "shapes", "params"), [
    # One block, no hidden layer: 28 -> conv 26 -> pool 13; 13*13*8 = 1352 inputs to the softmax.
    ((8,), 0, [(26, 26, 8), (13, 13, 8), (1352,), (10,)],
     [conv(3, 1, 8), 0, 0, dense(1352, 10)]),
    # Three blocks: 28 -> 26 -> 13, 13 -> 11 -> 5, 5 -> 3 -> 1; 1*1*64 = 64 inputs to the hidden layer.
    ((16, 32, 64), 50, [(26, 26, 16), (13, 13, 16), (11, 11, 32), (5, 5, 32), (3, 3, 64), (1, 1, 64), (64,),
                        (50,), (10,)],
     [conv(3, 1, 16), 0, conv(3, 16, 32), 0, conv(3, 32, 64), 0, 0, dense(64, 50), dense(50, 10)]),
    # Odd, small counts: 5*5*7 = 175 inputs to a 3-unit hidden layer.
    ((5, 7), 3, [(26, 26, 5), (13, 13, 5), (11, 11, 7), (5, 5, 7), (175,), (3,), (10,)],
     [conv(3, 1, 5), 0, conv(3, 5, 7), 0, 0, dense(175, 3), dense(3, 10)]),
])
def test_cnn_family_with_odd_settings(filters, dense_units, shapes, params):
    model = build("cnn", filters, dense_units)
    expected_kinds = ["Conv2D", "MaxPooling2D"] * len(filters) + ["Flatten"] + ["Dense"] * (2 if dense_units else 1)
    assert kinds(model) == expected_kinds
    assert [tuple(layer.output.shape)[1:] for layer in model.layers] == shapes
    assert [layer.count_params() for layer in model.layers] == params
    assert model.count_params() == sum(params)
    # Spelled out once, so the helper functions above cannot hide a mistake: 80 + 13,530.
    if filters == (8,):
        assert model.count_params() == (3 * 3 * 1 * 8 + 8) + (1352 * 10 + 10) == 13_610


@pytest.mark.parametrize(("filters", "dense_units", "message"), [
    ((8, 8, 8, 8), 100, "4 convolution blocks asked for, but a 28x28 image allows at most 3"),
    ((32, 64, 128, 256, 512), 100, "5 convolution blocks asked for, but a 28x28 image allows at most 3"),
    ((32, 0), 100, "every number of filters must be at least 1, got 32 0"),
    ((-4,), 100, "every number of filters must be at least 1, got -4"),
    ((), 100, "the cnn needs at least one convolution block"),
    ((32, 64), -1, "-1 dense units: give 0"),
])
def test_impossible_cnn_settings_are_refused_in_one_line(filters, dense_units, message):
    """In the library's words: the command line adds the option names (tests/test_experiments.py)."""
    with pytest.raises(errors.InputError) as refused:
        settings.network_spec("cnn", filters, dense_units)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and "--" not in str(refused.value)


def test_the_summary_is_as_wide_as_the_terminal_says_and_its_setting_is_left_as_it_was(monkeypatch, capsys):
    """A terminal's COLUMNS sets the summary's width (rich reads it), and is the user's again afterwards."""
    monkeypatch.setenv("COLUMNS", "90")
    networks.print_summary(networks.build_cnn())
    table = [line for line in capsys.readouterr().out.splitlines() if line[:1] in "┏┃┡│├└"]
    assert {len(line) for line in table} == {90} and os.environ["COLUMNS"] == "90"


def test_three_blocks_is_the_most_a_28x28_image_allows():
    assert settings.max_conv_blocks() == 3
    networks.build_cnn((1, 1, 1), 0)  # the largest allowed: 28 -> 13 -> 5 -> 1 pixels, builds fine


def test_resnet_layers_and_parameter_count():
    model = build("resnet")
    assert model.name == "mnist_resnet"
    layer_kinds = kinds(model)
    # stem + 4 blocks of two 3x3 convolutions + 2 projections (where 16 -> 32 and 32 -> 64 channels,
    # stride 2); a batch normalisation after each; 4 additions; global average pooling; softmax.
    assert layer_kinds.count("Conv2D") == 1 + 4 * 2 + 2
    assert layer_kinds.count("BatchNormalization") == 11
    assert layer_kinds.count("Add") == 4
    assert layer_kinds[-2:] == ["GlobalAveragePooling2D", "Dense"]
    assert sorted(layer.name for layer in model.layers if layer.name.endswith("proj_conv")) == [
        "stage2_block1_proj_conv", "stage3_block1_proj_conv"]
    shapes = {layer.name: tuple(layer.output.shape)[1:] for layer in model.layers}
    assert shapes["stem_relu"] == (28, 28, 16)
    assert shapes["stage1_block1_out"] == (28, 28, 16)
    assert shapes["stage2_block1_out"] == (14, 14, 32)
    assert shapes["stage3_block1_out"] == shapes["stage3_block2_out"] == (7, 7, 64)
    assert shapes["pool"] == (64,) and shapes["probabilities"] == (10,)

    stem = conv(3, 1, 16, bias=False) + batch_norm(16)  # 144 + 64
    stage1 = 2 * (conv(3, 16, 16, bias=False) + batch_norm(16))  # identity shortcut
    stage2 = (conv(3, 16, 32, bias=False) + conv(3, 32, 32, bias=False) + 2 * batch_norm(32)
              + conv(1, 16, 32, bias=False) + batch_norm(32))  # 1x1 projection, stride 2
    stage3 = (conv(3, 32, 64, bias=False) + conv(3, 64, 64, bias=False) + 2 * batch_norm(64)
              + conv(1, 32, 64, bias=False) + batch_norm(64)
              + 2 * (conv(3, 64, 64, bias=False) + batch_norm(64)))  # second block: identity shortcut
    head = dense(64, 10)
    assert (stem, stage1, stage2, stage3, head) == (208, 4736, 14720, 132352, 650)
    assert model.count_params() == stem + stage1 + stage2 + stage3 + head == 152_666


def test_resnet_takes_no_cnn_settings_and_unknown_architectures_are_refused():
    for filters, dense_units in (((32, 64), None), (None, 100)):
        with pytest.raises(errors.InputError, match="filters and dense units shape the cnn; the resnet has a fixed"):
            settings.network_spec("resnet", filters, dense_units)
    with pytest.raises(errors.InputError, match="unknown architecture 'vgg16': choose one of cnn, resnet"):
        settings.network_spec("vgg16")


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize(("architecture", "filters", "dense_units"),
                         [("cnn", None, None), ("cnn", (8,), 0), ("resnet", None, None)])
def test_outputs_are_probabilities(architecture, filters, dense_units, precision):
    """Even under bfloat16 mixed precision: a bfloat16 softmax would miss a sum of 1 by about 1e-3."""
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build(architecture, filters, dense_units)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    _, _, x_test, _, _ = bundled_mnist()
    probabilities = model.predict(np.asarray(data.preprocess(x_test[:8])), verbose=0)
    assert probabilities.shape == (8, 10) and probabilities.dtype == np.float32
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert np.ptp(probabilities, axis=0).max() > 1e-4  # different digits, different answers


def test_resnet_saved_after_one_step_loads_in_a_fresh_process(tmp_path):
    """model.keras holds only built-in layers: plain Keras, without this program, loads it and agrees."""
    x_train, y_train, x_test, _, _ = bundled_mnist()
    model = build("resnet")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(np.asarray(data.preprocess(x_train[:64])), y_train[:64], batch_size=64, epochs=1, verbose=0)
    path, digits = tmp_path / "model.keras", tmp_path / "digits.npy"
    model.save(path)
    np.save(digits, np.asarray(data.preprocess(x_test[:16])))
    load_and_predict = ("import sys, keras, numpy as np; model = keras.models.load_model(sys.argv[1]); "
                        "np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))")
    loaded = tmp_path / "loaded.npy"
    result = subprocess.run([sys.executable, "-c", load_and_predict, str(path), str(digits), str(loaded)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(loaded), model.predict(np.load(digits), verbose=0), atol=1e-6)


@pytest.mark.parametrize(("architecture", "filters", "dense_units", "sections", "rows"), [
    ("cnn", (8,), 0, 2, 1 + 1),  # 8 kernels; one convolution, 8 maps
    ("cnn", (16, 32, 64), 50, 3, 1 + 1 + 2),  # 16 kernels; 16 maps, then 32 maps (16 a row)
    ("resnet", None, None, 3, 1 + 1 + 1),  # 16 kernels; 16 maps, 16 maps
])
def test_filter_picture_for_any_architecture(tmp_path, architecture, filters, dense_units, sections, rows):
    """Kernels, then the first two convolutions' maps (as many as the model has), 16 small images a row."""
    model = build(architecture, filters, dense_units)
    _, _, x_test, _, _ = bundled_mnist()
    path = tmp_path / "filters.png"
    pictures.plot_filters(model, np.asarray(data.preprocess(x_test[:1]))[0], path)
    with Image.open(path) as picture:
        width, height = picture.size
    assert width >= 600
    expected = 75 * rows + 45 * sections  # 0.75 inch a row and 0.45 a title, at 100 dpi: no empty rows
    assert 0.8 * expected < height < 1.2 * expected
