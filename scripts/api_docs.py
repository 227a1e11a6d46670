"""Write docs/api.md, the API reference, from the comments in protos/genserve/v1/*.proto.

    python scripts/api_docs.py            # (re)write docs/api.md; `make proto` runs it
    python scripts/api_docs.py --check    # exit 1 when docs/api.md is stale

protoc parses the files (with --include_source_info, so every comment stays attached to the
element it documents); this script only lays the descriptors out as Markdown: per file its
services (methods, request and response, streaming), messages (fields, types, comments) and
enums. The comments are the documentation: write them in the .proto files, not here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "docs" / "api.md"

# Paths inside FileDescriptorProto that SourceCodeInfo locations use (descriptor.proto's numbers).
SYNTAX, MESSAGE, ENUM, SERVICE = 12, 4, 5, 6
FIELD, NESTED, NESTED_ENUM, ENUM_VALUE, METHOD = 2, 3, 4, 2, 2

SCALARS = {getattr(descriptor_pb2.FieldDescriptorProto, name): name.removeprefix("TYPE_").lower()
           for name in descriptor_pb2.FieldDescriptorProto.Type.keys()}


def parse(files: list[Path]) -> descriptor_pb2.FileDescriptorSet:
    """protoc's descriptors of `files`, comments included."""
    include = str(resources.files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", f"-I{PROTOS}", f"-I{include}", "--include_source_info", f"--descriptor_set_out={out}",
                *(str(f.relative_to(PROTOS)) for f in files)]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed on " + ", ".join(map(str, files)))
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Path of each element -> its leading comment (or trailing, when it has only that)."""
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            found[tuple(location.path)] = " ".join(line.strip() for line in text.strip().splitlines())
    return found


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def type_name(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, str]) -> str:
    if field.type_name:
        name = field.type_name.lstrip(".")
        if name in maps:
            return maps[name]
        short = name.removeprefix("genserve.v1.")
        return f"[{short}](#{short.lower().replace('.', '')})" if not name.startswith("google.") else f"`{name}`"
    return f"`{SCALARS[field.type]}`"


def label(field: descriptor_pb2.FieldDescriptorProto, shown: str, maps: dict[str, str]) -> str:
    if field.type_name and field.type_name.lstrip(".") in maps:
        return shown
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {shown}"
    return f"optional {shown}" if field.proto3_optional else shown


def message_lines(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str,
                  notes: dict[tuple[int, ...], str], maps: dict[str, str]) -> list[str]:
    if message.options.map_entry:
        return []
    name = prefix + message.name
    lines = [f"### {name}", ""]
    if path in notes:
        lines += [notes[path], ""]
    if message.field:
        lines += ["| Field | Type | Number | Description |", "|---|---|---|---|"]
        for i, field in enumerate(message.field):
            shown = label(field, type_name(field, maps), maps)
            if field.HasField("oneof_index") and not field.proto3_optional:
                shown += f" (oneof `{message.oneof_decl[field.oneof_index].name}`)"
            lines.append(f"| `{field.name}` | {shown} | {field.number} | {cell(notes.get(path + (FIELD, i), ''))} |")
        lines.append("")
    else:
        lines += ["No fields.", ""]
    for i, nested in enumerate(message.enum_type):
        lines += enum_lines(nested, path + (NESTED_ENUM, i), f"{name}.", notes)
    for i, nested in enumerate(message.nested_type):
        lines += message_lines(nested, path + (NESTED, i), f"{name}.", notes, maps)
    return lines


def enum_lines(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str,
               notes: dict[tuple[int, ...], str]) -> list[str]:
    lines = [f"### {prefix}{enum.name}", ""]
    if path in notes:
        lines += [notes[path], ""]
    lines += ["| Value | Number | Description |", "|---|---|---|"]
    for i, value in enumerate(enum.value):
        lines.append(f"| `{value.name}` | {value.number} | {cell(notes.get(path + (ENUM_VALUE, i), ''))} |")
    return lines + [""]


def map_types(files: descriptor_pb2.FileDescriptorSet) -> dict[str, str]:
    """Full name of each map-entry message -> `map<key, value>`."""
    found = {}

    def visit(message: descriptor_pb2.DescriptorProto, scope: str) -> None:
        full = f"{scope}.{message.name}"
        if message.options.map_entry:
            key, value = message.field
            found[full] = f"map<{type_name(key, found)}, {type_name(value, found)}>"
        for nested in message.nested_type:
            visit(nested, full)

    for file in files.file:
        for message in file.message_type:
            visit(message, file.package)
    return found


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    maps = map_types(files)
    ours = [f for f in files.file if f.name.startswith("genserve/")]
    lines = ["# genserve API reference", "",
             "Generated from the comments in `protos/genserve/v1/*.proto` by `scripts/api_docs.py`",
             "(`make proto` regenerates it; a test fails when it is stale). Do not edit by hand.", "",
             "Package `genserve.v1`. Every server also serves `grpc.health.v1.Health` and server reflection.", "",
             "## Services", ""]
    for file in ours:
        for service in file.service:
            lines.append(f"- [{service.name}](#{service.name.lower()}) (`{file.name}`)")
    lines.append("")
    for file in ours:
        notes = comments(file)
        lines += [f"## {file.name}", ""]
        if (SYNTAX,) in notes:
            lines += [notes[(SYNTAX,)], ""]
        for i, service in enumerate(file.service):
            lines += [f"### {service.name}", ""]
            if (SERVICE, i) in notes:
                lines += [notes[(SERVICE, i)], ""]
            lines += ["| Method | Request | Response | Description |", "|---|---|---|---|"]
            for j, method in enumerate(service.method):
                request = method.input_type.lstrip(".").removeprefix("genserve.v1.")
                response = method.output_type.lstrip(".").removeprefix("genserve.v1.")
                shown_in = ("stream " if method.client_streaming else "") + f"[{request}](#{request.lower()})"
                shown_out = ("stream " if method.server_streaming else "") + f"[{response}](#{response.lower()})"
                lines.append(f"| `{method.name}` | {shown_in} | {shown_out} | {cell(notes.get((SERVICE, i, METHOD, j), ''))} |")
            lines.append("")
        for i, message in enumerate(file.message_type):
            lines += message_lines(message, (MESSAGE, i), "", notes, maps)
        for i, enum in enumerate(file.enum_type):
            lines += enum_lines(enum, (ENUM, i), "", notes)
    return "\n".join(lines).rstrip() + "\n"


def generate() -> str:
    return render(parse(sorted(PROTOS.glob("genserve/v1/*.proto"))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not up to date")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run `make proto` (or python scripts/api_docs.py)", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
