#!/usr/bin/env bash
# NBD throughput of the bd variants through sealfs's NBD server: a 16 MiB
# export of Std, Crypt and VeriCrypt (image files in a temp dir, so mostly
# page cache) copied with nbdcopy (default and 4 KiB requests), and
# one-at-a-time 4 KiB sequential and random reads with a Go client.
# Prints MB/s and the ratio to Std. Not part of `make test`. Needs nbdcopy
# (Debian package libnbd-bin). Usage: bench/nbd.sh [COPIES] (nbdcopy runs
# per variant, default 20; the 4 KiB read loops run 2 s each)
set -euo pipefail

cd "$(dirname "$0")/.."
command -v nbdcopy >/dev/null || { echo "nbd.sh: nbdcopy is not installed (libnbd-bin)" >&2; exit 1; }
copies=${1:-20}

{
	go test -run '^$' -bench 'Nbdcopy' -benchtime "${copies}x" ./nbd/ 2>/dev/null
	go test -run '^$' -bench 'NBDRead4K' -benchtime 2s ./nbd/ 2>/dev/null
} |
	awk '
	/^Benchmark/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		mbs = ""
		for (i = 2; i <= NF; i++) if ($(i) == "MB/s") mbs = $(i - 1)
		if (mbs == "") next
		# name is Kind/Variant[/Mode]; the Std row of the same Kind/Mode is the base.
		n = split(name, p, "/")
		kind = p[1]; variant = p[2]; mode = (n > 2) ? p[3] : "bulk"
		key = kind "/" mode
		val[key, variant] = mbs
		if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
		if (!(variant in vseen)) { vseen[variant] = 1; vorder[++nv] = variant }
	}
	END {
		printf "%-22s %-10s %10s %9s\n", "benchmark", "variant", "MB/s", "vs Std"
		for (k = 1; k <= nk; k++) {
			key = order[k]
			for (v = 1; v <= nv; v++) {
				variant = vorder[v]
				if (!((key, variant) in val)) continue
				base = val[key, "Std"]
				ratio = (base > 0) ? sprintf("%.2f", val[key, variant] / base) : "-"
				printf "%-22s %-10s %10.1f %9s\n", key, variant, val[key, variant], ratio
			}
		}
	}'
