"""A setting chosen from a few words (margin mode, fill policy): parsed leniently, refused clearly."""

from __future__ import annotations

import re
from enum import Enum

from .errors import InputError


class Choice(str, Enum):
    """A ``str`` enum whose :meth:`parse` accepts any case and names the field when it refuses;
    the field is the class name in snake case (``MarginMode`` → ``margin_mode``)."""

    @classmethod
    def parse(cls, value):
        text = str(value.value if isinstance(value, Enum) else value).strip().lower()
        try:
            return cls(text)
        except ValueError:
            field = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
            options = " or ".join(repr(m.value) for m in cls)
            raise InputError(f"{field.replace('_', ' ')} must be {options}, got {value!r}",
                             field=field) from None

    def __str__(self) -> str:
        return self.value
