"""Training of the classifier and the segmenter (``brainseg-train``).

:func:`~brainseg_core.training.loop.train` with a :class:`~brainseg_core.training.loop.TrainConfig`
does the work; :mod:`.data` holds the split, the in-memory slice set and the augmentation,
:mod:`.losses` the losses. Submodules are imported on demand so ``import brainseg_core.training``
stays light.
"""
