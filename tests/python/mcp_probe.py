"""Drives an MCP server with the official Python SDK (PyPI `mcp`, pinned in
ops/python-sdk/requirements.txt) over Streamable HTTP, for the Rust tests
(tests/src/python.rs). Prints one JSON object on stdout.

    mcp_probe.py <url> <token> list-tools
        {"pages": <tools/list requests made>, "names": [<every tool name>]}
    mcp_probe.py <url> <token> modern <tool> <arguments as JSON>
        The SDK's default client (`mcp.Client`, mode "auto": server/discover,
        falling back to initialize). Prints a line
        {"protocol": <version>, "names": [...], "call": <as call>}, opens
        subscriptions/listen for tool-list changes and prints
        {"listening": true}; at the first change, relists and prints
        {"changed": true, "names": [...]}.
    mcp_probe.py <url> <token> call <tool> <arguments as JSON>
        {"isError": ..., "blocks": [...], "texts": <text blocks>,
         "reassembled": [{"len": <chars>, "sha256": <hex of UTF-8>}, ...]}

`reassembled` has one entry per text block, and one per large result split
into resource links `sophia://results/<id>/<block>/<part>`: the parts read
with resources/read and joined in part order, at the place of the first.

Any exception (the SDK's validation errors, its SSE event size limit, an
error reply) prints {"error": "<type>: <message>"} and exits with status 2.
"""

import asyncio
import functools
import hashlib
import json
import sys

import httpx2
import mcp.types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

RESULTS = "sophia://results/"


async def list_tools(session):
    pages, names, cursor = 0, [], None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        pages += 1
        names += [tool.name for tool in result.tools]
        cursor = result.next_cursor
        if not cursor:
            return {"pages": pages, "names": names}


def summary(text):
    return {"len": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


async def reassemble(session, content):
    """Text blocks as they are; the parts of each split block, read and joined."""
    entries, groups = [], {}  # groups: (id, block) -> (entry index, {part: uri})
    for block in content:
        if block.type == "text":
            entries.append(block.text)
        elif block.type == "resource_link" and str(block.uri).startswith(RESULTS):
            rid, index, part = str(block.uri)[len(RESULTS):].split("/")
            if (rid, index) not in groups:
                groups[(rid, index)] = (len(entries), {})
                entries.append(None)
            groups[(rid, index)][1][int(part)] = str(block.uri)
    for at, parts in groups.values():
        texts = []
        for part in sorted(parts):
            read = await session.read_resource(parts[part])
            texts.append(read.contents[0].text)
        entries[at] = "".join(texts)
    return [summary(text) for text in entries]


async def call(session, tool, arguments):
    result = await session.call_tool(tool, arguments)
    blocks = []
    for block in result.content:
        b = {"type": block.type}
        if block.type == "resource_link":
            b["uri"] = str(block.uri)
        if block.type == "text":
            b["len"] = len(block.text)
        blocks.append(b)
    return {
        "isError": bool(result.is_error),
        "blocks": blocks,
        "texts": sum(1 for block in result.content if block.type == "text"),
        "reassembled": await reassemble(session, result.content),
    }


async def probe(url, token, run):
    """Connects, initializes, and runs `run(session)`."""
    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(30, read=300)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await run(session)


async def modern(url, token, tool, arguments):
    """The default client, then a listen stream: one JSON line per step."""
    from mcp import Client

    headers = {"Authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(30, read=300)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        names = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool(tool, arguments)
        called = {"isError": result.is_error, "texts": [b.text for b in result.content if b.type == "text"]}
        emit({"protocol": client.protocol_version, "names": names, "call": called})
        async with client.listen(tools_list_changed=True) as events:
            emit({"listening": True})
            async for _event in events:
                names = [t.name for t in (await client.list_tools()).tools]
                return {"changed": True, "names": names}
        return {"error": "the listen stream ended without a change"}


def emit(line):
    print(json.dumps(line), flush=True)


def innermost(error):
    """The first exception inside (nested) exception groups from anyio."""
    while isinstance(error, ExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def main():
    match sys.argv[1:]:
        case [url, token, "list-tools"]:
            run = list_tools
        case [url, token, "call", tool, arguments]:
            run = functools.partial(call, tool=tool, arguments=json.loads(arguments))
        case [url, token, "modern", tool, arguments]:
            try:
                out = asyncio.run(modern(url, token, tool, json.loads(arguments)))
            except Exception as e:
                error = innermost(e)
                out = {"error": f"{type(error).__name__}: {error}"}
            emit(out)
            sys.exit(2 if "error" in out else 0)
        case _:
            raise SystemExit(__doc__)
    try:
        out = asyncio.run(probe(url, token, run))
    except Exception as e:
        error = innermost(e)
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
        sys.exit(2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
