"""The detached actors longserve leaves on a Ray cluster, and how to remove them.

    python -m longserve.server.actors list
    python -m longserve.server.actors remove [NAME ...]   # all of them when no NAME

The JobStore (`jobstore-<backend>-<hash of its location>`, one per backend)
and the Stats actor (`longserve-stats-<app>`, one per app) are detached, in
the `longserve` namespace: they outlive `serve delete` and `serve shutdown`,
so jobs stay queryable and a redeploy finds them. They follow the settings of
the newest deploy without a restart. Remove them after `serve shutdown` (a
running app's replicas hold handles to them): jobs stay in a sqlite or redis
backend and come back with the next deploy; with the memory backend they are
lost, and so are the latency samples.
"""

import argparse
import logging

import ray

NAMESPACE = "longserve"
PREFIXES = ("jobstore-", "longserve-stats-")


def detached() -> list[str]:
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIXES)
    )


def main(argv: "list[str] | None" = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m longserve.server.actors", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default="auto", help="the Ray cluster (default: the one running here)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list longserve's detached actors")
    remove = commands.add_parser("remove", help="kill longserve's detached actors (all when no name is given)")
    remove.add_argument("names", nargs="*")
    args = parser.parse_args(argv)

    ray.init(
        address=args.address,
        namespace=NAMESPACE,
        logging_level=logging.ERROR,
        log_to_driver=False,
        ignore_reinit_error=True,
    )  # already connected when called from a driver
    names = detached()
    if args.command == "list":
        print("\n".join(names) or "no detached longserve actors")
        return
    unknown = set(args.names) - set(names)
    if unknown:
        parser.error(f"no such longserve actor: {', '.join(sorted(unknown))} (have: {', '.join(names) or 'none'})")
    for name in args.names or names:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        print(f"removed {name}")


if __name__ == "__main__":
    main()
