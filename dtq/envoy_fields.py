"""Refusing unknown fields in REST bodies, in Envoy, before the transcoder.

Envoy's gRPC-JSON transcoder drops body fields the request message does not
have (envoyproxy/envoy#46623): `{"type": "x", "schedule_at": "..."}` would run
at once, its misspelled schedule silently ignored. `lua_filter` renders a Lua
HTTP filter from the descriptor set: for each REST route with a body (POST,
PATCH) it lists the fields of the request message, or of the one field that is
the body (`body: "schedule"`) (proto and JSON names, nested messages in
turn), scans the JSON body and answers 400 naming the first unknown field.
Struct, Value, maps and every other field whose JSON is not a message of ours
take any content. A body that is not JSON passes on: the transcoder refuses it.
"""

from __future__ import annotations

import re
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

Fields = dict[str, "bool | str"]  # JSON key -> True (any value) or a message name
MAP_ENTRY = "MapEntry"


def _messages(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = message
        for nested in message.nested_type:
            add(name, nested)

    for file in files.file:
        for message in file.message_type:
            add(f".{file.package}" if file.package else "", message)
    return found


def _ours(name: str) -> bool:
    return name.startswith(".dtq.")


def schemas(descriptor: bytes, services: tuple[str, ...]) -> tuple[list[Any], dict[str, Fields]]:
    """(routes, schemas): routes as (method, path regex, body message) for every
    POST and PATCH with a body; schemas by message name, for every message they reach."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor)
    messages = _messages(files)
    routes: list[Any] = []
    for file in files.file:
        for service in file.service:
            if f"{file.package}.{service.name}" not in services:
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                verb, template = ("POST", rule.post) if rule.post else ("PATCH", rule.patch)
                if not template or not rule.body:
                    continue
                if rule.body == "*":
                    routes.append((verb, _regex(template), method.input_type))
                else:  # one field is the body: its message
                    body = next(f for f in messages[method.input_type].field if f.name == rule.body)
                    routes.append((verb, _regex(template), body.type_name))
    found: dict[str, Fields] = {}
    todo = [name for _, _, name in routes]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        fields: Fields = {}
        for field in messages[name].field:
            kind: bool | str = True
            if field.type == field.TYPE_MESSAGE and _ours(field.type_name):
                inner = messages[field.type_name]
                if not inner.options.map_entry:
                    kind = field.type_name
                    todo.append(field.type_name)
            fields[field.name] = kind
            fields[field.json_name or field.name] = kind
        found[name] = fields
    return routes, found


def _regex(template: str) -> str:
    """`/api/v1/tasks/{id}:cancel` -> `^/api/v1/tasks/[^/]+:cancel$` (Lua pattern)."""
    parts = re.split(r"\{[^}]*\}", template)
    return "^" + "[^/]+".join(re.sub(r"([^\w/])", r"%\1", p) for p in parts) + "$"


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lua_table(fields: Fields) -> str:
    items = [
        f"[{_lua_string(k)}] = {'true' if v is True else _lua_string(str(v))}"
        for k, v in sorted(fields.items())
    ]
    return "{" + ", ".join(items) + "}"


def lua_filter(descriptor: bytes, services: tuple[str, ...]) -> str:
    """The Lua source of the filter."""
    routes, found = schemas(descriptor, services)
    lines = ["local SCHEMAS = {"]
    lines += [f"  [{_lua_string(name)}] = {_lua_table(f)}," for name, f in sorted(found.items())]
    lines += ["}", "local ROUTES = {"]
    lines += [f"  {{{_lua_string(v)}, {_lua_string(r)}, {_lua_string(m)}}}," for v, r, m in routes]
    lines += ["}", SCANNER]
    return "\n".join(lines) + "\n"


SCANNER = r"""
local ESCAPES = {b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"}

local function ws(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local function str(s, i)
  local j, parts = i + 1, {}
  while true do
    local k = s:find('["\\]', j)
    if not k then error("json") end
    parts[#parts + 1] = s:sub(j, k - 1)
    if s:byte(k) == 34 then return table.concat(parts), k + 1 end
    local c = s:sub(k + 1, k + 1)
    if c == "u" then
      local code = tonumber(s:sub(k + 2, k + 5), 16) or 255
      parts[#parts + 1] = code < 128 and string.char(code) or "\255"
      j = k + 6
    else
      parts[#parts + 1] = ESCAPES[c] or c
      j = k + 2
    end
  end
end

local object

local function value(s, i, schema)
  i = ws(s, i)
  local c = s:byte(i)
  if c == 34 then
    local _, n = str(s, i)
    return n
  elseif c == 123 then
    return object(s, i, schema)
  elseif c == 91 then
    i = ws(s, i + 1)
    if s:byte(i) == 93 then return i + 1 end
    while true do
      i = ws(s, value(s, i, schema))
      local d = s:byte(i)
      if d == 93 then return i + 1 end
      if d ~= 44 then error("json") end
      i = i + 1
    end
  end
  return s:find("[,}%] \t\r\n]", i) or #s + 1
end

object = function(s, i, schema)
  local fields = type(schema) == "string" and SCHEMAS[schema] or nil
  i = ws(s, i + 1)
  if s:byte(i) == 125 then return i + 1 end
  while true do
    if s:byte(i) ~= 34 then error("json") end
    local key
    key, i = str(s, i)
    local inner = true
    if fields then
      inner = fields[key]
      if inner == nil then error({unknown = key}) end
    end
    i = ws(s, i)
    if s:byte(i) ~= 58 then error("json") end
    i = ws(s, value(s, i + 1, inner))
    local d = s:byte(i)
    if d == 125 then return i + 1 end
    if d ~= 44 then error("json") end
    i = ws(s, i + 1)
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local verb = headers:get(":method")
  if verb ~= "POST" and verb ~= "PATCH" then return end
  local path = (headers:get(":path") or ""):gsub("%?.*", "")
  local message
  for _, route in ipairs(ROUTES) do
    if verb == route[1] and path:find(route[2]) then message = route[3] break end
  end
  if not message then return end
  local body = handle:body()
  if not body or body:length() == 0 then return end
  local text = body:getBytes(0, body:length())
  local i = ws(text, 1)
  if text:byte(i) ~= 123 then return end
  local ok, err = pcall(object, text, i, message)
  if not ok and type(err) == "table" then
    handle:respond(
      {[":status"] = "400", ["content-type"] = "text/plain"},
      "unknown field \"" .. err.unknown .. "\" in the request body")
  end
end
"""
