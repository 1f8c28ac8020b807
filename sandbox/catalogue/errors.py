"""Errors of dataset import: each names the rule, option or setting the caller should change."""

from __future__ import annotations

from sandbox.errors import Conflict, InvalidInput, NotFound


class FileRejected(InvalidInput):
    """The dataset file cannot be registered as it is; fix the file or the import options."""

    code = "file_rejected"


class WrongEncoding(FileRejected):
    """The bytes do not decode in the declared encoding (context: line)."""

    code = "wrong_encoding"


class MalformedFile(FileRejected):
    """The file does not parse (context: line for CSV/JSON lines, row for Parquet)."""

    code = "malformed_file"


class UnsupportedFormat(FileRejected):
    """The format is not one of csv, parquet, jsonl (or cannot be told from the file name)."""

    code = "unsupported_format"


class EmptyFile(FileRejected):
    """The file has no rows or no columns."""

    code = "empty_file"


class DuplicateColumn(FileRejected):
    """Two columns share a name (compared case-insensitively, as SQL does)."""

    code = "duplicate_column"


class InvalidColumnName(FileRejected):
    """A column name is empty, not a plain SQL identifier, or a reserved word."""

    code = "invalid_column_name"


class WrongDelimiter(FileRejected):
    """The header holds another delimiter than the one given: the file is, e.g., `;`-separated."""

    code = "wrong_delimiter"


class UnsupportedColumnType(FileRejected):
    """A column holds nested or exotic values; Sluice datasets are flat tables."""

    code = "unsupported_column_type"


class FileTooLarge(FileRejected):
    """The file is larger than the configured maximum (SLUICE_MAX_UPLOAD_BYTES)."""

    code = "file_too_large"


class InvalidImportOptions(InvalidInput):
    """An import option is not valid: encoding, delimiter, format or column_types."""

    code = "invalid_import_options"


class SourceNotFound(NotFound):
    """The source file does not exist or is not a regular file."""

    code = "source_not_found"


class DestinationExists(Conflict):
    """The destination folder of a dataset version exists already; versions are never overwritten."""

    code = "destination_exists"


class ImportRootNotConfigured(InvalidInput):
    """Server-side paths are disabled until SLUICE_IMPORT_ROOT names an existing folder."""

    code = "import_root_not_configured"


class PathOutsideImportRoot(InvalidInput):
    """A server-side path resolves (symlinks and '..' followed) to outside SLUICE_IMPORT_ROOT."""

    code = "path_outside_import_root"
