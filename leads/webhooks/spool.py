"""A durable queue on the local disk: append-only files of JSON lines under RECORD_SPOOL_DIR,
written by the answering processes and consumed by whoever records (the app's own writer
threads, or `manage.py record_worker`). It outlives the process that answered: a line is in
the file once its single write() returns (the page cache survives the process; only a crash of
the machine itself could lose it), so a process killed right after answering loses nothing.

The protocol, all in one directory on one file system (renames are atomic there):
  open/<file>     appended to by its writer only, one line per write() (O_APPEND);
  ready/<file>    rotated by its writer (after RECORD_SPOOL_ROTATE_LINES lines or
                  RECORD_SPOOL_ROTATE_SECONDS), never written again;
  claimed/<consumer>/<file>
                  taken by one consumer by renaming it out of ready/ (two consumers cannot
                  both win), recorded, then deleted; put back into ready/ when recording fails.
A file's name carries its writer (host, process id, process start time) and a consumer's
directory its own: an open file whose writer has died, or a claimed file whose consumer has,
is moved back to ready/ by the next consumer on the same host (a reused process id is told
apart by its start time). Files of other hosts are left to their own consumers.
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

OPEN, READY, CLAIMED = "open", "ready", "claimed"
SUFFIX = ".jsonl"


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot) where /proc has it, else "0"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def identity(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}~{pid}~{_start_time(pid)}"


def alive(who: str) -> bool | None:
    """Whether the process `who` (an identity) still runs; None for another host's."""
    try:
        host, pid, started = who.split("~")[-3:]
        pid_number = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return started == "0" or _start_time(pid_number) == started


def directory() -> Path:
    return Path(settings.RECORD_SPOOL_DIR)


def _subdirectories(root: Path) -> None:
    for name in (OPEN, READY, CLAIMED):
        (root / name).mkdir(parents=True, exist_ok=True, mode=0o700)


def encode(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


class Writer:
    """This process's open spool file. `append` is the answer path's whole cost: one write()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._owner = 0  # the process that opened it (a forked child opens its own)
        self._lines = 0
        self._opened_at = 0.0
        self._sequence = 0
        self._rotator: threading.Thread | None = None
        self.on_rotate: Callable[[], None] | None = None

    def append(self, record: dict) -> None:
        line = encode(record)
        with self._lock:
            root = directory()
            if self._fd is None or self._owner != os.getpid() or self._path.parents[1] != root:
                self._open(root)
            written = os.write(self._fd, line)
            if written != len(line):  # a full disk: the line is cut, the file ends here
                self._rotate_locked()
                raise OSError(f"spool: wrote {written} of {len(line)} bytes")
            self._lines += 1
            if self._lines >= settings.RECORD_SPOOL_ROTATE_LINES:
                self._rotate_locked()
        self._ensure_rotator()

    def rotate(self) -> bool:
        """Hand the open file over to the consumers (ready/); False if it holds no line."""
        with self._lock:
            return self._rotate_locked()

    def _open(self, root: Path) -> None:
        if self._fd is not None:
            self._let_go()
        _subdirectories(root)
        self._sequence += 1
        name = f"{time.time_ns():020d}~{identity()}~{self._sequence}{SUFFIX}"
        self._path = root / OPEN / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self._path, flags, 0o600)
        self._owner, self._lines, self._opened_at = os.getpid(), 0, time.monotonic()

    def _let_go(self) -> None:
        """The spool moved (a test's setting) or this is a forked child: the old file is done
        with. The child's copy of its parent's descriptor is only closed (the file is the
        parent's); an empty file of this process's own is removed."""
        mine = self._owner == os.getpid()
        if mine and self._rotate_locked():
            return
        os.close(self._fd)
        if mine:
            self._path.unlink(missing_ok=True)
        self._fd, self._path, self._lines = None, None, 0

    def _rotate_locked(self) -> bool:
        if self._fd is None or self._owner != os.getpid() or not self._lines:
            return False
        os.close(self._fd)
        os.rename(self._path, self._path.parents[1] / READY / self._path.name)
        self._fd, self._path, self._lines = None, None, 0
        return True

    def due(self) -> bool:
        age = time.monotonic() - self._opened_at
        return bool(self._lines) and age >= settings.RECORD_SPOOL_ROTATE_SECONDS

    def _ensure_rotator(self) -> None:
        if self._rotator is not None and self._rotator.is_alive():
            return
        with self._lock:
            if self._rotator is None or not self._rotator.is_alive():
                self._rotator = threading.Thread(
                    target=self._rotate_forever, name="opsdash-spool-rotator", daemon=True
                )
                self._rotator.start()

    def _rotate_forever(self) -> None:
        """A file is never left open with lines in it for long, even when calls stop."""
        while True:
            time.sleep(settings.RECORD_SPOOL_ROTATE_SECONDS / 2)
            try:
                with self._lock:
                    rotated = self.due() and self._rotate_locked()
                if (rotated or has_ready()) and self.on_rotate is not None:
                    self.on_rotate()
            except Exception:  # noqa: BLE001 - the rotator must outlive any one failure
                log.exception("spool: rotation failed")


# --- consuming -------------------------------------------------------------------------------


def has_ready(root: Path | None = None) -> bool:
    try:
        with os.scandir((root or directory()) / READY) as entries:
            return any(entry.name.endswith(SUFFIX) for entry in entries)
    except FileNotFoundError:
        return False


def reclaim(root: Path) -> int:
    """Move the files of dead writers (open/) and dead consumers (claimed/) back to ready/."""
    _subdirectories(root)
    moved = 0
    for path in sorted((root / OPEN).glob(f"*{SUFFIX}")):
        if alive(path.name.removesuffix(SUFFIX).rsplit("~", 1)[0]) is False:
            moved += _move(path, root / READY / path.name)
    for consumer in (root / CLAIMED).iterdir():
        if consumer.is_dir() and alive(consumer.name) is False:
            for path in consumer.glob(f"*{SUFFIX}"):
                moved += _move(path, root / READY / path.name)
            _remove_directory(consumer)
    if moved:
        log.warning("spool: %d file(s) of processes that died taken back for recording", moved)
    return moved


def _move(source: Path, target: Path) -> int:
    try:
        os.rename(source, target)
        return 1
    except FileNotFoundError:  # another consumer moved it first
        return 0


def _remove_directory(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (its consumer came back to life) or gone already


class Claim:
    """A ready file taken by this process: `lines()` to read, then `done()` or `give_back()`."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root

    @property
    def name(self) -> str:
        return self.path.name

    def records(self) -> Iterator[dict]:
        with open(self.path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    # Only a cut line (a full disk) can be unreadable: it was never whole.
                    log.error("spool: %s line %d is not a record; skipped", self.name, number)
                    continue
                yield record

    def done(self) -> None:
        self.path.unlink(missing_ok=True)

    def give_back(self) -> None:
        _move(self.path, self.root / READY / self.path.name)


def claims(root: Path | None = None) -> Iterator[Claim]:
    """Take the ready files one at a time, oldest first (those another consumer takes first are
    skipped)."""
    root = root or directory()
    reclaim(root)
    mine = root / CLAIMED / identity()
    mine.mkdir(exist_ok=True, mode=0o700)
    for path in sorted((root / READY).glob(f"*{SUFFIX}")):
        if _move(path, mine / path.name):
            yield Claim(mine / path.name, root)


def pending(root: Path | None = None) -> int:
    """Files not yet recorded (open with lines, ready, or claimed)."""
    root = root or directory()
    if not root.exists():
        return 0
    counted = sum(1 for _ in (root / READY).glob(f"*{SUFFIX}"))
    counted += sum(1 for p in (root / OPEN).glob(f"*{SUFFIX}") if p.stat().st_size)
    return counted + sum(1 for _ in (root / CLAIMED).glob(f"*/*{SUFFIX}"))


writer = Writer()
