"""A channels_redis peer for test/redis-interop.test.ts.

Reads one JSON command per line on stdin and answers each with one JSON line on stdout:
{"id": ..., "ok": true, "result": ...} or {"id": ..., "ok": false, "error": "..."}. Commands run
concurrently (a receive waits while later commands go on). Binary values travel through JSON as
{"__bytes__": "<base64>"}.

Usage: python3 channels_redis_peer.py '{"prefix": "...", "hosts": ["redis://127.0.0.1:6379"]}'
"""

import asyncio
import base64
import json
import sys

from channels_redis.core import RedisChannelLayer


def from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return base64.b64decode(value["__bytes__"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def to_json(value):
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


async def run(layer, command):
    op = command["op"]
    if op == "send":
        await layer.send(command["channel"], from_json(command["message"]))
        return None
    if op == "receive":
        message = await asyncio.wait_for(layer.receive(command["channel"]), command.get("timeout", 10))
        return to_json(message)
    if op == "new_channel":
        return await layer.new_channel(*([command["prefix"]] if "prefix" in command else []))
    if op == "group_add":
        await layer.group_add(command["group"], command["channel"])
        return None
    if op == "group_discard":
        await layer.group_discard(command["group"], command["channel"])
        return None
    if op == "group_send":
        await layer.group_send(command["group"], from_json(command["message"]))
        return None
    if op == "flush":
        await layer.flush()
        return None
    if op == "hash":
        return layer.consistent_hash(command["value"])
    if op == "serialize":
        # The bytes channels_redis stores for a message (random prefix included).
        return to_json(layer.serialize(from_json(command["message"])))
    raise ValueError(f"unknown op {op!r}")


async def main():
    config = json.loads(sys.argv[1])
    layer = RedisChannelLayer(hosts=config["hosts"], prefix=config["prefix"], **config.get("options", {}))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks = set()

    def reply(payload):
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    async def handle(command):
        try:
            result = await run(layer, command)
            reply({"id": command["id"], "ok": True, "result": result})
        except BaseException as error:  # noqa: B036 - report everything to the test
            reply({"id": command["id"], "ok": False, "error": f"{type(error).__name__}: {error}"})

    reply({"id": 0, "ok": True, "result": "ready"})
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        if command["op"] == "exit":
            break
        task = asyncio.ensure_future(handle(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await layer.close_pools()


if __name__ == "__main__":
    asyncio.run(main())
