"""The parts of handwritten_digit_classification.py, one job a module.

Import without Keras (so the command line answers before Keras loads; tests/test_layout.py checks):
`errors`, `settings`, `signals`, `cli`, `backend` (the one backend-specific place: it loads Keras
quietly when asked), `data`, `outputs`, `photos`, `drawing`, `server`, `evaluation`, `predict`,
`folders` (labelled image folders), `collect` (the page's saved digits), `your_digits` (--evaluate).
Keras-side: `networks`, `augment`, `training`, `precision`, `pictures`.

Imports run one way, from the script down: no module imports the script, and there are no cycles
(tests/test_layout.py checks both).
"""
