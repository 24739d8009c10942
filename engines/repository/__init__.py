"""The VA Fleet repository format and its operations (see docs/repository-format.md)."""

from engines.repository.format import FORMAT_VERSION, Manifest, RepositoryConfig
from engines.repository.keys import IntegrityError, WrongPassphrase
from engines.repository.store import Repository, RepositoryError

__all__ = ["FORMAT_VERSION", "IntegrityError", "Manifest", "Repository", "RepositoryConfig", "RepositoryError",
           "WrongPassphrase"]
