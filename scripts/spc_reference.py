#!/usr/bin/env python3
"""Independent reference values for the SPC unit tests (aggregator/src/analytics/spc.rs).

Run: python3 scripts/spc_reference.py  (needs numpy and scipy; `pip install numpy scipy`)

Computes, with numpy/scipy and without any of the Rust code:
1. the control chart constant d2(n) = E[range of n standard normals] by numerical integration,
   and A2 = 3 / (d2 * sqrt(n)), to hold the textbook table against;
2. the X-bar-R chart of Montgomery's piston-ring data (Introduction to Statistical Quality
   Control, Table 6.3: 25 samples of 5 inside diameters, mm; spec 74.000 +- 0.05);
3. the I-MR chart and capability of the first 40 of those diameters taken as individuals, and
   their X-bar-R chart in subgroups of 5 (the API test's fixture);
4. the run-rule flags of a fixed sequence, from a second, deliberately plain implementation.
The printed numbers are pasted into the tests, with this script named as their provenance.
"""
import json
import math

import numpy as np
from scipy import integrate, stats

PISTON = [
    74.030, 74.002, 74.019, 73.992, 74.008, 73.995, 73.992, 74.001, 74.011, 74.004,
    73.998, 74.024, 74.021, 74.005, 74.002, 74.002, 73.996, 73.993, 74.015, 74.009,
    73.992, 74.007, 74.015, 73.989, 74.014, 74.009, 73.994, 73.997, 73.985, 73.993,
    73.995, 74.006, 73.994, 74.000, 74.005, 73.985, 74.003, 73.993, 74.015, 73.988,
    74.008, 73.995, 74.009, 74.005, 74.004, 73.998, 74.000, 73.990, 74.007, 73.995,
    73.994, 73.998, 73.994, 73.995, 73.990, 74.004, 74.000, 74.007, 74.000, 73.996,
    73.983, 74.002, 73.998, 73.997, 74.012, 74.006, 73.967, 73.994, 74.000, 73.984,
    74.012, 74.014, 73.998, 73.999, 74.007, 74.000, 73.984, 74.005, 73.998, 73.996,
    73.994, 74.012, 73.986, 74.005, 74.007, 74.006, 74.010, 74.018, 74.003, 74.000,
    73.984, 74.002, 74.003, 74.005, 73.997, 74.000, 74.010, 74.013, 74.020, 74.003,
    73.982, 74.001, 74.015, 74.005, 73.996, 74.004, 73.999, 73.990, 74.006, 74.009,
    74.010, 73.989, 73.990, 74.009, 74.014, 74.015, 74.008, 73.993, 74.000, 74.010,
    73.982, 73.984, 73.995, 74.017, 74.013,
]
LSL, USL = 73.95, 74.05

# The rules sequence: an in-control start, then a drift (as the demo press does).
RULES_SEQ = [
    10.0, 10.4, 9.7, 10.2, 9.9, 10.1, 9.6, 10.3, 9.8, 10.0,
    10.5, 10.6, 10.8, 10.9, 11.1, 11.3, 11.2, 11.6, 11.4, 11.9,
    12.2, 9.9, 10.1,
]


def d2(n):
    f = lambda x: 1.0 - stats.norm.cdf(x) ** n - (1.0 - stats.norm.cdf(x)) ** n
    return integrate.quad(f, -np.inf, np.inf)[0]


def capability(mu, s):
    return (USL - LSL) / (6 * s), min(USL - mu, mu - LSL) / (3 * s)


def rules(x, c, s):
    """Plain re-implementation of the rules as worded in the spc.rs module doc."""
    z = [(v - c) / s for v in x]
    out = []
    for i in range(len(x)):
        f = []
        if abs(z[i]) > 3:
            f.append("we1")
        for k, m, lim, name in ((2, 3, 2, "we2"), (4, 5, 1, "we3")):
            if i + 1 >= m:
                w = z[i + 1 - m:i + 1]
                if (z[i] > lim and sum(v > lim for v in w) >= k) or (
                    z[i] < -lim and sum(v < -lim for v in w) >= k
                ):
                    f.append(name)
        if i >= 7 and (all(v > 0 for v in z[i - 7:i + 1]) or all(v < 0 for v in z[i - 7:i + 1])):
            f.append("we4")
        if i >= 5:
            d = np.diff(x[i - 5:i + 1])
            if all(d > 0) or all(d < 0):
                f.append("n5")
        if i >= 13:
            d = np.diff(x[i - 13:i + 1])
            if all(d != 0) and all(np.sign(d[1:]) == -np.sign(d[:-1])):
                f.append("n6")
        if i >= 14 and all(abs(v) < 1 for v in z[i - 14:i + 1]):
            f.append("n7")
        if i >= 7:
            w = z[i - 7:i + 1]
            if all(abs(v) > 1 for v in w) and any(v > 0 for v in w) and any(v < 0 for v in w):
                f.append("n8")
        out.append(f)
    return out


def main():
    res = {}
    res["d2"] = {n: d2(n) for n in range(2, 11)}
    res["a2"] = {n: 3 / (d2(n) * math.sqrt(n)) for n in range(2, 11)}

    g = np.array(PISTON).reshape(25, 5)
    xbar = g.mean(axis=1)
    r = g.max(axis=1) - g.min(axis=1)
    xbb, rbar = xbar.mean(), r.mean()
    sw = rbar / 2.326
    so = np.std(g.ravel(), ddof=1)
    res["xbar_r"] = {
        "center": xbb, "r_bar": rbar, "ucl": xbb + 0.577 * rbar, "lcl": xbb - 0.577 * rbar,
        "r_ucl": 2.114 * rbar, "sigma_within": sw, "sigma_overall": so,
        "cp_cpk": capability(g.mean(), sw), "pp_ppk": capability(g.mean(), so),
    }

    x = np.array(PISTON[:40])
    mr = np.abs(np.diff(x))
    swi = mr.mean() / 1.128
    soi = np.std(x, ddof=1)
    res["imr_40"] = {
        "mean": x.mean(), "mr_bar": mr.mean(), "sigma_within": swi, "sigma_overall": soi,
        "ucl": x.mean() + 3 * swi, "lcl": x.mean() - 3 * swi, "mr_ucl": 3.267 * mr.mean(),
        "cp_cpk": capability(x.mean(), swi), "pp_ppk": capability(x.mean(), soi),
    }

    g = x.reshape(8, 5)
    r = g.max(axis=1) - g.min(axis=1)
    res["xbar_r_40"] = {
        "center": g.mean(axis=1).mean(), "r_bar": r.mean(), "ucl": g.mean() + 0.577 * r.mean(),
        "lcl": g.mean() - 0.577 * r.mean(), "sigma_within": r.mean() / 2.326,
        "cp_cpk": capability(x.mean(), r.mean() / 2.326),
    }

    y = np.array(RULES_SEQ)
    c = y.mean()
    s = np.abs(np.diff(y)).mean() / 1.128
    res["rules_seq"] = {"center": c, "sigma": s,
                        "violations": {i: f for i, f in enumerate(rules(list(y), c, s)) if f}}
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
