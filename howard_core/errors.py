"""The one exception type the CLI turns into a single line and a non-zero exit.

Raise `HowardError` for anything a user can fix (bad path, wrong checkpoint,
unreadable frame). The message is the whole user-facing line: name the file or
frame, say what was found, and say what to do about it.
"""


class HowardError(Exception):
    """A user-facing failure: `str(err)` is one line naming the input and the fix."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
