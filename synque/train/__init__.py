"""Downstream performance per candidate set: the trainer components of the `train` stage.

`base` holds the interface the stage calls (`Trainer`, `SupervisedTrainer`), the result and
the hold-out split; `fitting` the Lightning fit with early stopping on the best weights;
`classifier` trains text classifiers, `image` ResNet-50 or a small CNN, and `recorded`
imports performance measured elsewhere. Each is named by a `configs/train/*.yaml` file.
"""
