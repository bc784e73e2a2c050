"""r1kit prints its own progress: these silence the libraries' progress bars and the warnings that are not the user's."""

QUIET_ENV = "R1KIT_QUIET"
"""Set to 1 by `r1kit --quiet`: training shows no per-step progress (train/progress.py). An environment
variable, so that the ranks a launch starts inherit it."""


def quiet_imports() -> None:
    """Called by the command before anything is imported. transformers imports torchao whenever it is installed
    (the export extra); torchao then warns about its CUDA-only kernels on CPU machines and about enum
    registrations torch has deprecated. TRL reads transformers' deprecated `is_gradient_checkpointing` at every
    GRPO step and rollout, which warned on the console each time. None of these concerns r1kit's users."""
    import logging
    import warnings

    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_warning()
    quiet_imports()


def quiet_datasets() -> None:
    from datasets import disable_progress_bars

    disable_progress_bars()
