"""A separate OS process for the infrastructure tests, standing in for a django-q2 worker.

    python -m tests.infra.worker_process --database NAME send CHANNEL
    python -m tests.infra.worker_process --database NAME group-send GROUP
    python -m tests.infra.worker_process --database NAME sync CONNECTION_ID

It uses the test database the calling test runs on and the configured channel layer (the
database layer by default, Redis when VAFLEET_REDIS_URL is set, unless --database-layer), and
prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="name of the test database to use")
    parser.add_argument("--layer-prefix", default="", help="Redis channel layer prefix (keeps test runs apart)")
    parser.add_argument("--database-layer", action="store_true", help="use the database channel layer even with Redis")
    parser.add_argument("command", choices=["send", "group-send", "sync"])
    parser.add_argument("target", help="channel, group or connection id")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vaproject.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.DATABASES["default"]["NAME"] = args.database
    if args.database_layer:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "core.channel_layer.DatabaseChannelLayer"}}
    elif args.layer_prefix:
        settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})["prefix"] = args.layer_prefix

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    message = {"type": "test.message", "pid": os.getpid(), "text": "hello from another process"}
    if args.command == "send":
        async_to_sync(get_channel_layer().send)(args.target, message)
        result = {"sent": args.target}
    elif args.command == "group-send":
        async_to_sync(get_channel_layer().group_send)(args.target, message)
        result = {"sent": args.target}
    else:
        from inventory.sync import sync_connection

        outcome = sync_connection(int(args.target))
        result = {"ok": outcome.ok, "message": outcome.message}
    print(json.dumps({"pid": os.getpid(), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
