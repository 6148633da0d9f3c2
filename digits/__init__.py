"""The parts of handwritten_digit_classification.py, one job a module.

Keras-free (they import with Keras absent, so the command line answers before Keras loads):
`errors`, `settings`, `signals`, `cli`, `data`, `outputs`, `photos`, `drawing`.
Keras-side: `backend` (the one backend-specific place), `networks`, `augment`, `precision`,
`training`, `evaluation`, `pictures`, `predict`, `server`.

Imports run one way: a module imports only the modules listed before it in its own group, and
Keras-side modules may import the Keras-free ones, never the other way round.
"""
