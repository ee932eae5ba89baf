"""User-facing errors: one clear line, non-zero exit, nothing partial written."""


class CollapseBenchError(Exception):
    """An error caused by the user's input or environment (unknown model, missing data, bad YAML...).

    The CLI prints ``collapse-bench: error: <message>`` on one line and exits with code 1.
    Messages must say what was wrong and, where possible, what to do.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line
