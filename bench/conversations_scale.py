"""Conversation list and search at scale: 5,000 conversations / 100,000 messages for one user.

Seeds the database of a real ModelTrain server (uvicorn subprocess on loopback), then measures over HTTP
GET /api/conversations (page 1 and a deep page) and GET /api/conversations/search (rare, medium and
frequent words, a two-word query and FTS-syntax input), against GET /api/users/me measured in the same
run as the baseline (same auth, middleware and DB lookup, no conversation work).

    .venv/bin/python bench/conversations_scale.py [--conversations 5000] [--messages 100000] [--requests 200]

Targets: p95 <= 20 ms list, <= 50 ms search.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_common import pct, start_modeltrain
from server.db.models import Conversation, Message, User
from server.db.session import create_db_engine

WORDS = [
    "river",
    "mountain",
    "cloud",
    "python",
    "server",
    "model",
    "answer",
    "question",
    "travel",
    "recipe",
    "garden",
    "music",
    "history",
    "science",
    "ocean",
    "forest",
    "city",
    "winter",
    "summer",
    "coffee",
    "bread",
    "engine",
    "planet",
    "energy",
    "market",
    "school",
    "health",
    "language",
    "computer",
    "network",
    "memory",
    "signal",
    "picture",
    "story",
    "letter",
    "number",
    "circle",
    "window",
    "bridge",
    "island",
    "desert",
]
RARE = "zanzibar"  # put into ~20 messages
MEDIUM = "lighthouse"  # ~2 % of messages


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def seed(db_url: str, conversations: int, messages: int) -> float:
    rng = random.Random(7)
    engine = create_db_engine(db_url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        user_id = conn.execute(select(User.id).where(User.email == "admin@example.com")).scalar_one()
    per = messages // conversations
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    rare_left = 20
    for base in range(0, conversations, 500):
        convs, msgs = [], []
        for i in range(base, min(conversations, base + 500)):
            cid = uuid.uuid4()
            created = start + timedelta(minutes=i * 7)
            convs.append(
                {
                    "id": cid,
                    "user_id": user_id,
                    "title": sentence(rng, 4)[:60],
                    "title_edited": False,
                    "model": "m",
                    "system_prompt": "",
                    "options": {},
                    "pinned": i % 250 == 0,
                    "created_at": created,
                    "updated_at": created + timedelta(minutes=per),
                }
            )
            parent = None
            for j in range(per):
                mid = uuid.uuid4()
                text = sentence(rng, 12 if j % 2 == 0 else 60)
                if rng.random() < 0.02:
                    text += f" The {MEDIUM} was bright."
                if rare_left and rng.random() < 0.001:
                    text += f" Welcome to {RARE}."
                    rare_left -= 1
                msgs.append(
                    {
                        "id": mid,
                        "conversation_id": cid,
                        "parent_id": parent,
                        "role": "user" if j % 2 == 0 else "assistant",
                        "content": text,
                        "thinking": "",
                        "status": "complete",
                        "model": "m",
                        "created_at": created + timedelta(seconds=j),
                        "updated_at": created + timedelta(seconds=j),
                        "error": None,
                        "usage": None,
                        "timings": None,
                    }
                )
                parent = mid
        with engine.begin() as conn:
            conn.execute(Conversation.__table__.insert(), convs)
            conn.execute(Message.__table__.insert(), msgs)
    engine.dispose()
    return time.perf_counter() - t0


def measure(client: httpx.Client, path: str, n: int) -> tuple[list[float], dict]:
    times, body = [], {}
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        body = r.json()
    return times, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    mt = start_modeltrain("http://127.0.0.1:9")  # no upstream needed
    try:
        db_url = f"sqlite:///{mt.data_dir / 'modeltrain.db'}"
        took = seed(db_url, args.conversations, args.messages)
        print(f"seeded {args.conversations} conversations / {args.messages} messages in {took:.1f} s")
        n = args.requests
        with httpx.Client(base_url=mt.url, headers={"Authorization": f"Bearer {mt.token}"}, timeout=30) as c:
            cases = [
                ("baseline GET /api/users/me", "/api/users/me"),
                ("list page 1 (size 50)", "/api/conversations?page=1&size=50"),
                ("list page 60 (size 50)", "/api/conversations?page=60&size=50"),
                (f"search rare word ({RARE})", f"/api/conversations/search?q={RARE}"),
                (f"search medium word ({MEDIUM})", f"/api/conversations/search?q={MEDIUM}"),
                ("search frequent word (river)", "/api/conversations/search?q=river"),
                ("search two words (river coffee)", "/api/conversations/search?q=river%20coffee"),
                ("search FTS syntax", "/api/conversations/search?q=%22unbalanced%20AND%20("),
            ]
            for _, path in cases:  # warm-up
                measure(c, path, 3)
            print(f"{'request':<36} {'p50 ms':>8} {'p95 ms':>8} {'hits':>6}")
            base95 = None
            for label, path in cases:
                times, body = measure(c, path, n)
                p95 = pct(times, 95)
                base95 = base95 or p95
                hits = body.get("total", "") if isinstance(body, dict) else ""
                print(
                    f"{label:<36} {pct(times, 50):8.1f} {p95:8.1f} {hits!s:>6}  "
                    f"({p95 / base95:.1f}x baseline p95)"
                )
    finally:
        mt.stop()
    print("targets: p95 <= 20 ms list, <= 50 ms search")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
