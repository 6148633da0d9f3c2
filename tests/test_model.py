"""The network is exactly the one specified."""
import numpy as np

import handwritten_digit_classification as hdc


def test_layers_shapes_and_parameter_count():
    model = hdc.build_model()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    shapes = [tuple(layer.output.shape) for layer in model.layers]
    assert shapes == [(None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64), (None, 5, 5, 64),
                      (None, 1600), (None, 100), (None, 10)]
    assert [layer.count_params() for layer in model.layers] == [320, 0, 18496, 0, 0, 160100, 1010]
    assert model.count_params() == 179_926


def test_outputs_are_probabilities():
    probabilities = hdc.build_model().predict(np.random.rand(4, 28, 28, 1).astype("float32"), verbose=0)
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
