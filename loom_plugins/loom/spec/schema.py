"""JSON Schema of each entity kind, for editors (YAML language server) and tooling."""

from __future__ import annotations

import json
from pathlib import Path

from loom.spec.models import ENTITY_KINDS

SCHEMA_DIR_NAME = "schemas"


def schemas() -> dict[str, dict]:
    out = {}
    for kind, model in ENTITY_KINDS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"Loom {kind[:-1]}"
        out[f"{kind}.schema.json"] = schema
    return out


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
