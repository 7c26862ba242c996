"""A MovieLens-like synthetic dataset at any size, in the ML-1M file format (``ratings.dat``, ``movies.dat``).

    python eval/synth_data.py --interactions 1e6 --out /tmp/synth-1m --seed 0
    llm-rec fit --dataset ml-1m --data-dir /tmp/synth-1m ...

Shape (per 1M interactions: about 6,040 users and 3,706 items, the ML-1M ratios):

- Items belong to one of 18 topics (the ML-1M genres, plus sometimes a second genre) and have a
  power-law popularity (Zipf exponent ``--item-alpha``).
- Users have a power-law number of interactions, at least 20 each (as in MovieLens), and a
  few favourite topics (Dirichlet weights).
- Sequences are runs ("sessions") within one of the user's topics: a run starts at a
  popularity-weighted item of the topic and walks forward through the topic's fixed item
  order by small steps, so what comes next depends on what came last (signal for a sequence
  model beyond popularity). A share ``--noise`` of events are popularity draws from the whole
  catalogue instead. A user never repeats an item (repeats are dropped, as in MovieLens).
- Timestamps increase per user (minutes to days apart, starting within 2000-2003);
  ratings 1-5 lean on popularity.

Everything is vectorised numpy: 10M interactions take well under a minute and a few GB.
Generated data is never committed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
WORDS = ["Crimson", "Harbor", "Silent", "River", "Last", "Winter", "Broken", "Mirror", "Golden", "Road", "Hidden", "City", "Long", "Night", "Paper", "Moon", "Iron", "Garden", "Lost", "Signal", "Burning", "Sky", "Quiet", "Storm", "Empty", "Room", "Blue", "Horizon", "Distant", "Shore", "Glass", "House", "Wild", "Heart", "Northern", "Light", "Secret", "Valley", "Falling", "Star", "Black", "Orchid", "Little", "Dragon", "Second", "Chance", "Midnight", "Train"]
ML1M_USERS_PER_1M, ML1M_ITEMS_PER_1M = 6040, 3706
MIN_PER_USER = 20


def sizes(interactions: int) -> tuple[int, int]:
    """(users, items) in ML-1M's proportions for ``interactions`` rows."""
    scale = interactions / 1e6
    return max(5, round(ML1M_USERS_PER_1M * scale)), max(50, round(ML1M_ITEMS_PER_1M * scale))


def user_lengths(rng: np.random.Generator, n_users: int, total: int, cap: int) -> np.ndarray:
    """Power-law lengths >= MIN_PER_USER (Pareto tail) rescaled so they sum to about ``total``."""
    raw = MIN_PER_USER * (1.0 - rng.random(n_users)) ** (-1.0 / 1.2)  # Pareto, shape 1.2 (heavy, like ML)
    excess = raw - MIN_PER_USER
    need = max(total - MIN_PER_USER * n_users, 0)
    lengths = MIN_PER_USER + np.minimum(excess * need / max(excess.sum(), 1e-9), cap - MIN_PER_USER)
    for _ in range(5):  # the cap moved mass away; hand it back to the uncapped users
        short = total - lengths.sum()
        free = lengths < cap
        if short <= 1 or not free.any():
            break
        lengths[free] = np.minimum(lengths[free] + short * excess[free] / excess[free].sum(), cap)
    return np.maximum(np.round(lengths), MIN_PER_USER).astype(np.int64)


def generate(interactions: int, seed: int, *, n_topics: int = len(GENRES), item_alpha: float = 1.1,
             noise: float = 0.25, mean_run: float = 6.0, max_step: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_users, n_items = sizes(interactions)

    # Items: a topic each, power-law popularity, a fixed order within each topic (the "walk" order).
    topic = rng.integers(n_topics, size=n_items)
    pop = 1.0 / np.arange(1, n_items + 1) ** item_alpha
    pop = pop[rng.permutation(n_items)]
    by_topic = np.lexsort((rng.random(n_items), topic))  # items grouped by topic, random order inside
    t_start = np.searchsorted(topic[by_topic], np.arange(n_topics))
    t_size = np.bincount(topic, minlength=n_topics)
    pos_in_topic = np.empty(n_items, np.int64)
    pos_in_topic[by_topic] = np.arange(n_items) - t_start[topic[by_topic]]

    # Users: lengths; oversample to survive the repeat filter (dense users repeat more), trimmed back afterwards.
    # (+8%: heavy users lose some of their draws to the repeat filter)
    lengths = user_lengths(rng, n_users, round(interactions * 1.08), cap=max(MIN_PER_USER, n_items // 2))
    draw = np.ceil(lengths * (1.3 + 3.0 * lengths / n_items)).astype(np.int64) + 10
    n = int(draw.sum())
    user = np.repeat(np.arange(n_users), draw)
    first = np.cumsum(draw) - draw  # index of each user's first event

    # Runs: geometric lengths; a new run starts at each user's first event too.
    new_run = rng.random(n) < 1.0 / mean_run
    new_run[first] = True
    run_id = np.cumsum(new_run) - 1
    run_user = user[new_run]
    favs = rng.dirichlet(np.full(n_topics, 0.3), size=n_users)  # a few favourite topics per user
    cum = favs.cumsum(1)
    run_topic = (rng.random(len(run_user))[:, None] > cum[run_user]).sum(1).clip(max=n_topics - 1)
    # Start item: a popularity draw among the topic's items.
    start_item = np.empty(len(run_user), np.int64)
    for t in range(n_topics):
        sel = np.flatnonzero(run_topic == t)
        members = by_topic[t_start[t] : t_start[t] + t_size[t]]
        if sel.size and members.size:
            w = pop[members] / pop[members].sum()
            start_item[sel] = rng.choice(members, size=sel.size, p=w)
    # Walk: position = start + cumulative steps within the run, wrapped inside the topic.
    step = rng.integers(1, max_step + 1, size=n)
    step[new_run] = 0
    csum = np.cumsum(step)
    offset = csum - csum[np.flatnonzero(new_run)][run_id]
    t = run_topic[run_id]
    p = (pos_in_topic[start_item[run_id]] + offset) % np.maximum(t_size[t], 1)
    item = by_topic[t_start[t] + p]
    # Noise: popularity draws from the whole catalogue.
    is_noise = rng.random(n) < noise
    item[is_noise] = rng.choice(n_items, size=int(is_noise.sum()), p=pop / pop.sum())

    # Drop repeats (keep the first), then trim each user to their length.
    key = user * n_items + item
    _, first_seen = np.unique(key, return_index=True)
    keep = np.zeros(n, bool)
    keep[first_seen] = True
    user, item = user[keep], item[keep]
    rank = np.arange(len(user)) - np.searchsorted(user, user)  # position within the user, in order
    keep = rank < lengths[user]
    user, item = user[keep], item[keep]
    # Like MovieLens, keep only users with MIN_PER_USER or more (a tiny, dense catalogue can leave some short).
    keep = np.bincount(user, minlength=n_users)[user] >= MIN_PER_USER
    user, item = user[keep], item[keep]

    # Timestamps: each user starts within 2000-2003; gaps from a minute to days, strictly increasing.
    start = rng.integers(946_684_800, 1_041_379_200, size=n_users)  # 2000-01-01 .. 2003-01-01
    gap = np.maximum(1, rng.exponential(3600.0, size=len(user)) * rng.choice([1, 1, 1, 24, 240], size=len(user)))
    gap = gap.astype(np.int64)
    cg = np.cumsum(gap)
    u_first = np.searchsorted(user, np.arange(n_users))
    base = np.where(u_first > 0, cg[np.maximum(u_first - 1, 0)], 0)
    ts = start[user] + cg - base[user]
    # Ratings lean on popularity: popular items get a little more love.
    z = np.log(pop[item] / pop.max())
    rating = np.clip(np.round(3.6 + 0.12 * z + rng.normal(0, 1.0, size=len(user))), 1, 5).astype(np.int64)

    second = np.where(rng.random(n_items) < 0.4, rng.integers(len(GENRES), size=n_items), -1)
    return {"user": user + 1, "item": item + 1, "rating": rating, "timestamp": ts, "topic": topic,
            "second_genre": second, "n_users": np.array(n_users), "n_items": np.array(n_items)}


def titles(n_items: int, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, 1])
    a, b = rng.integers(len(WORDS), size=(2, n_items))
    year = rng.integers(1930, 2001, size=n_items)
    return [f"{WORDS[x]} {WORDS[y]} {i + 1} ({yr})" for i, (x, y, yr) in enumerate(zip(a, b, year))]


def write(data: dict[str, np.ndarray], out: Path, seed: int) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    n_items = int(data["n_items"])
    lines = []
    for i, title in enumerate(titles(n_items, seed)):
        g = {GENRES[data["topic"][i] % len(GENRES)]}
        if data["second_genre"][i] >= 0:
            g.add(GENRES[data["second_genre"][i]])
        lines.append(f"{i + 1}::{title}::{'|'.join(sorted(g))}\n")
    (out / "movies.dat").write_text("".join(lines), encoding="latin-1")
    cols = np.stack([data["user"], data["item"], data["rating"], data["timestamp"]], 1)
    with open(out / "ratings.dat", "w", encoding="latin-1") as fh:
        for chunk in range(0, len(cols), 1_000_000):
            part = cols[chunk : chunk + 1_000_000].tolist()
            fh.write("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in part))
    per_user = np.bincount(data["user"])[1:]
    counts = np.sort(np.bincount(data["item"], minlength=n_items + 1)[1:])[::-1]
    stats = {
        "interactions": int(len(data["user"])),
        "users": int((per_user > 0).sum()),
        "items": n_items,
        "items_seen": int((counts > 0).sum()),
        "min_per_user": int(per_user.min()),
        "median_per_user": float(np.median(per_user)),
        "max_per_user": int(per_user.max()),
        "top_10pct_items_share": round(float(counts[: max(1, n_items // 10)].sum() / counts.sum()), 3),
    }
    (out / "synth.json").write_text(json.dumps(stats, indent=2))
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Load it with: llm-rec fit --dataset ml-1m --data-dir OUT")
    ap.add_argument("--interactions", type=float, default=1e6, help="rows to generate, e.g. 1e5, 1e6, 1e7 (default 1e6)")
    ap.add_argument("--out", type=Path, required=True, help="folder to write ratings.dat, movies.dat, synth.json into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.25, help="share of events drawn by popularity alone")
    ap.add_argument("--item-alpha", type=float, default=1.1, help="Zipf exponent of item popularity")
    args = ap.parse_args(argv)
    if not 1e3 <= args.interactions <= 1e8:
        ap.error("--interactions must be between 1e3 and 1e8")
    if not 0.0 <= args.noise <= 1.0:
        ap.error("--noise must be between 0 and 1")
    t0 = time.perf_counter()
    data = generate(int(args.interactions), args.seed, noise=args.noise, item_alpha=args.item_alpha)
    t1 = time.perf_counter()
    stats = write(data, args.out, args.seed)
    stats |= {"generate_s": round(t1 - t0, 1), "write_s": round(time.perf_counter() - t1, 1)}
    print(json.dumps(stats), file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
