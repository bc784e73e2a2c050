"""r1kit prints its own progress: these silence the libraries' per-file and per-map progress bars."""


def quiet_transformers() -> None:
    import logging as std_logging

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_warning()
    # transformers imports torchao whenever it is installed (the export extra); torchao then warns about its
    # CUDA-only kernels on CPU machines and about enum registrations torch has deprecated. Neither concerns r1kit.
    std_logging.getLogger("torchao").setLevel(std_logging.ERROR)
    std_logging.getLogger("torch.utils._pytree").setLevel(std_logging.ERROR)


def quiet_datasets() -> None:
    from datasets import disable_progress_bars

    disable_progress_bars()
