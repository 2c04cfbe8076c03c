"""Training of the classifier and the segmenter (``brainseg-train``).

:func:`~brainseg_core.training.loop.train` with a :class:`~brainseg_core.training.config.TrainConfig`
does the work; it runs the pieces, one module each:

- :mod:`.config`: the settings and their validation;
- :mod:`.data`: the split, K folds, the in-memory slice set, sampling, augmentation and crops;
- :mod:`.learner`: the model, its loss and optimiser; :mod:`.losses`: the losses;
- :mod:`.schedule`: the step plan and the learning rate; :mod:`.budget`: the time budget;
- :mod:`.epoch`: one training epoch; :mod:`.distributed`: one process or several (``torchrun``);
- :mod:`.validation`: metrics on the held-out patients, thresholds, out-of-fold predictions;
- :mod:`.checkpoint`: the local resume checkpoint; :mod:`.reporting`: history, log lines, curves;
- :mod:`.recipe`: what the model card records about the run, and the bundle.

Submodules are imported on demand so ``import brainseg_core.training`` stays light.
"""
