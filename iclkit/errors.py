"""User-facing errors: one clear message naming where the bad input is."""

from __future__ import annotations


class IclkitError(Exception):
    """Bad user input (file, option, model id). The CLI prints it and exits with code 2."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field is not None else ""
        hint = f"\n  hint: {self.hint}" if self.hint else ""
        return f"{where}{field}{self.message}{hint}"
