"""r1kit prints its own progress: these silence the libraries' per-file and per-map progress bars."""


def quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_warning()


def quiet_datasets() -> None:
    from datasets import disable_progress_bars

    disable_progress_bars()
