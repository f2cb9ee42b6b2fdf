"""Regenerate resources/demo/penguins_field_notes.csv (deterministic).

A penguin measurement table in the style of the Palmer penguins data, synthesised from per-species means and
standard deviations, with the kinds of faults field data has: typos in categories, decimal commas, 'n/a', a -999
sentinel, a value entered in the wrong unit, a duplicated row and a few mislabelled species.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

SPECIES = {
    # species: (islands, bill_length, bill_depth, flipper, mass)
    "Adelie": (["Torgersen", "Biscoe", "Dream"], (38.8, 2.7), (18.3, 1.2), (190.0, 6.5), (3700, 460)),
    "Chinstrap": (["Dream"], (48.8, 3.3), (18.4, 1.1), (195.8, 7.1), (3733, 384)),
    "Gentoo": (["Biscoe"], (47.5, 3.1), (15.0, 1.0), (217.2, 6.5), (5076, 504)),
}


def main(out: Path, n: int = 1200, seed: int = 7) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sp = rng.choices(list(SPECIES), weights=[0.44, 0.2, 0.36])[0]
        islands, bl, bd, fl, bm = SPECIES[sp]
        rows.append({
            "tag": f"PAL{i:05d}",
            "species": sp,
            "island": rng.choice(islands),
            "bill_length_mm": f"{rng.gauss(*bl):.1f}",
            "bill_depth_mm": f"{rng.gauss(*bd):.1f}",
            "flipper_length_mm": f"{round(rng.gauss(*fl))}",
            "body_mass_g": f"{round(rng.gauss(*bm) / 25) * 25}",
            "sex": rng.choice(["male", "female"]),
            "year": str(rng.choice([2007, 2008, 2009])),
        })
    # Faults a reviewer should find.
    faults = [
        (12, "bill_length_mm", "39,1"), (40, "sex", "mael"), (77, "island", "biscoe"), (95, "bill_depth_mm", "n/a"),
        (130, "body_mass_g", "-999"), (160, "flipper_length_mm", "1950"), (210, "sex", "male "),
        (260, "bill_length_mm", ""), (300, "body_mass_g", "#VALUE!"), (333, "island", "Dreem"),
        (420, "bill_depth_mm", "?"), (515, "flipper_length_mm", "-190"), (640, "sex", "NULL"),
        (700, "body_mass_g", "4.2"), (810, "bill_length_mm", "4410"), (905, "island", "Torgerson"),
    ]
    for r, col, val in faults:
        rows[r][col] = val
    for r in (50, 150, 250, 350, 450, 550, 650, 750, 850, 950, 1050, 1150):
        wrong = [s for s in SPECIES if s != rows[r]["species"]]
        rows[r]["species"] = rng.choice(wrong)
    rows.insert(600, dict(rows[599]))
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(Path(__file__).with_name("penguins_field_notes.csv"))
