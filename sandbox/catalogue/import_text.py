"""Reading text dataset files: declared encodings, UTF-8 for Arrow, line numbers, hashing, progress."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from sandbox.catalogue.errors import InvalidImportOptions, MalformedFile, WrongEncoding

ProgressCallback = Callable[[int, int | None], None]

# Declared encoding -> Python codec. GB18030 is a superset of GBK; cp936 is Windows' name for GBK.
ENCODINGS: dict[str, str] = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "gbk": "gbk",
    "cp936": "gbk",
    "gb18030": "gb18030",
}
UTF8_BOM = codecs.BOM_UTF8
CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 64 << 20


def codec_for(encoding: str) -> str:
    """The Python codec for a declared encoding; refuses encodings Sluice does not accept."""
    codec = ENCODINGS.get(encoding.strip().lower().replace("_", "-"))
    if codec is None:
        raise InvalidImportOptions(
            f"Encoding {encoding!r} is not supported; use 'utf-8', 'gbk' or 'gb18030'.",
            code="unsupported_encoding",
            encoding=encoding,
        )
    return codec


def _wrong_encoding(codec: str, line: int, exc: UnicodeDecodeError) -> WrongEncoding:
    hint = "gbk" if codec == "utf-8" else "utf-8"
    return WrongEncoding(
        f"Line {line} is not valid {codec} ({exc.reason}); the file was declared as {codec}. "
        f"Declare the file's real encoding (perhaps encoding={hint!r}) or re-save it as UTF-8.",
        line=line,
        encoding=codec,
    )


class Progress:
    """Reports bytes done out of the source size to a callback, averaged over the passes a format needs."""

    def __init__(self, callback: ProgressCallback | None, total: int, passes: int = 1) -> None:
        self._callback = callback
        self._total = total
        self._passes = passes
        self._reported = -1

    def update(self, pass_index: int, pass_bytes: int) -> None:
        """Record that `pass_bytes` of the source were processed in pass `pass_index` (0-based)."""
        if self._callback is None:
            return
        done = min(self._total, (pass_index * self._total + pass_bytes) // self._passes)
        if done > self._reported:
            self._reported = done
            self._callback(done, self._total)

    def for_pass(self, pass_index: int) -> Callable[[int], None]:
        """A one-argument callback for bytes done within one pass."""
        return lambda pass_bytes: self.update(pass_index, pass_bytes)

    def finish(self) -> None:
        """Report completion."""
        self.update(self._passes, 0)


class SourceStream:
    """A read-only file object that hands Arrow UTF-8 bytes, checking the declared encoding as it goes.

    It hashes the raw source bytes and counts lines so that a decoding error names its 1-based line.
    """

    def __init__(self, path: Path, codec: str, on_bytes: Callable[[int], None] | None = None) -> None:
        self._file: BinaryIO = path.open("rb")
        self._codec = codec
        self._decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        self._on_bytes = on_bytes
        self._sha = hashlib.sha256()
        self._out = bytearray()
        self._newlines = 0
        self._first = True
        self._eof = False
        self.bytes_read = 0
        self.quotes = 0  # double quotes seen; 0x22 never occurs inside a UTF-8, GBK or GB18030 character
        self.closed = False

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw bytes read so far (the whole file after `drain`)."""
        return self._sha.hexdigest()

    def readable(self) -> bool:
        """Always true: this stream is for reading."""
        return True

    def seekable(self) -> bool:
        """Always false: the stream is read once, front to back."""
        return False

    def read(self, size: int = -1) -> bytes:
        """Return `size` UTF-8 bytes (fewer only at the end); -1 reads everything left."""
        while not self._eof and (size < 0 or len(self._out) < size):
            self._pull()
        if size < 0 or size >= len(self._out):
            data = bytes(self._out)
            self._out.clear()
        else:
            data = bytes(self._out[:size])
            del self._out[:size]
        return data

    def drain(self) -> None:
        """Read (and check) whatever the consumer left unread, so the hash covers the whole file."""
        while not self._eof:
            self._pull()
            self._out.clear()

    def close(self) -> None:
        """Close the underlying file."""
        if not self.closed:
            self._file.close()
            self.closed = True

    def _pull(self) -> None:
        raw = self._file.read(CHUNK_BYTES)
        self._sha.update(raw)
        self.bytes_read += len(raw)
        if self._on_bytes is not None:
            self._on_bytes(self.bytes_read)
        body = raw
        if self._first:
            self._first = False
            if self._codec == "utf-8" and raw.startswith(UTF8_BOM):
                body = raw[len(UTF8_BOM) :]
        try:
            text = self._decoder.decode(body, final=not raw)
        except UnicodeDecodeError as exc:
            line = self._newlines + bytes(exc.object[: exc.start]).count(b"\n") + 1
            raise _wrong_encoding(self._codec, line, exc) from None
        self._newlines += body.count(b"\n")
        self.quotes += body.count(b'"')
        if not raw:
            self._eof = True
            return
        self._out += body if self._codec == "utf-8" else text.encode("utf-8")


class TextLines:
    """Iterates (1-based line number, decoded line with its ending) of a text file, hashing the raw bytes."""

    def __init__(self, path: Path, codec: str, on_bytes: Callable[[int], None] | None = None) -> None:
        self._path = path
        self._codec = codec
        self._on_bytes = on_bytes
        self._sha = hashlib.sha256()
        self.bytes_read = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw bytes read so far (the whole file once iteration has finished)."""
        return self._sha.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        reported = 0
        with self._path.open("rb") as handle:
            number = 0
            while True:
                raw = handle.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    return
                number += 1
                if len(raw) > MAX_LINE_BYTES:
                    raise MalformedFile(
                        f"Line {number} is longer than {MAX_LINE_BYTES} bytes; a line break is missing.",
                        line=number,
                    )
                self._sha.update(raw)
                self.bytes_read += len(raw)
                if self._on_bytes is not None and self.bytes_read - reported >= CHUNK_BYTES:
                    reported = self.bytes_read
                    self._on_bytes(self.bytes_read)
                body = (
                    raw[len(UTF8_BOM) :] if number == 1 and self._codec == "utf-8" and raw.startswith(UTF8_BOM) else raw
                )
                try:
                    text = body.decode(self._codec)
                except UnicodeDecodeError as exc:
                    raise _wrong_encoding(self._codec, number, exc) from None
                yield number, text
