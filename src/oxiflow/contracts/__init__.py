"""Data contracts: ODCS v3 and datacontract-specification documents, checked against data.

``load_contract(path)`` reads either format into :class:`~oxiflow.contracts.model.Contract`;
``checks`` runs a contract's rules over data in DuckDB, ``diff`` classifies changes between two
versions, ``infer`` drafts a contract (with PII classification) from data, ``mask`` is the oxi
that masks classified columns. See docs/contracts.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oxiflow.contracts.model import Contract


def load_contract(path: str) -> Contract:
    """The contract at ``path``, ODCS v3 or datacontract-specification (told apart by their keys)."""
    from oxiflow.contracts.odcs import load_document

    return load_document(path)
