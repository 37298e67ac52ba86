"""A plain-text progress bar for long commands, on stderr: "[#####.....] 500/1000", redrawn in
place on a terminal, a line every 10 % otherwise (logs and pipes get no carriage returns)."""

from django.core.management.base import OutputWrapper

WIDTH = 10


def unstyled(text: str) -> str:
    return text


class Progress:
    def __init__(self, total: int, stream: OutputWrapper, label: str = "") -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._label = f"{label} " if label else ""
        self._in_place = stream.isatty()
        self._last_tenth = 0

    def advance(self, steps: int = 1) -> None:
        self.done = min(self.total, self.done + steps)
        if self._in_place:
            self._stream.write(f"\r{self.bar()}", ending="", style_func=unstyled)
            self._stream.flush()
            return
        tenth = self.done * 10 // self.total if self.total else 10
        if tenth > self._last_tenth:
            self._last_tenth = tenth
            self._stream.write(self.bar(), style_func=unstyled)

    def finish(self) -> None:
        if self._in_place and self.total:
            self._stream.write("", style_func=unstyled)

    def bar(self) -> str:
        filled = self.done * WIDTH // self.total if self.total else WIDTH
        return f"{self._label}[{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}"
