# bench/report.awk - tables and plot data from bench/run.sh's raw file.
#
# usage: awk -f bench/report.awk -v what=WHAT -v cs=CASE -v kinds="K1 K2 .."
#            -v ref=KIND [-v size=BYTES] RAW
#
# RAW has one line per run: "case=.. rep=.. kind=.. tag=near|far|mixed
# pre=.. post=.. <the program's key=value line>".
#
# Selection (shared/BENCH.md: compare only runs with the same tag): for the
# row of kind K against reference kind R, a repetition counts when both ran
# in it; its tag is theirs when they agree, else "mixed".  The row uses the
# repetitions of the most frequent tag (near on a tie, mixed only when
# nothing else is there).  Figures are medians over those repetitions with
# [min-max]; ratios are taken per repetition, then the median.
#
# what:
#   rtt      markdown rows: latency percentiles of each kind, bus / kind
#   tput     markdown rows: rate, bytes/s, bus / kind, CPU s per million
#            records and peak RSS of producer and consumer
#   fanout   markdown rows: delivered rate per consumer count, / the 1-consumer
#            rate of the same repetition
#   idle     markdown rows: idle consumer CPU
#   plotrtt  gnuplot data: per kind, "x ns" at p50 .. max (x = 1/(1-p))
#   plottput gnuplot data: "size bytes_per_s" median for kind K in case cs
#   plotfan  gnuplot data: "consumers delivered slowest"
#   summary  one line per kind for the README: label, p50, p99.9, ratio
#   tsummary the same for throughput: label, records/s, bytes/s, ratio

function isort(arr, n,    i, j, t) {
	for (i = 2; i <= n; i++) {
		t = arr[i]
		for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]
		arr[j + 1] = t
	}
}
function med(arr, n,    i, c) {
	for (i = 1; i <= n; i++) c[i] = arr[i]
	isort(c, n)
	return n % 2 ? c[(n + 1) / 2] : (c[n / 2] + c[n / 2 + 1]) / 2
}
function amin(arr, n,    i, v) { v = arr[1]; for (i = 2; i <= n; i++) if (arr[i] < v) v = arr[i]; return v }
function amax(arr, n,    i, v) { v = arr[1]; for (i = 2; i <= n; i++) if (arr[i] > v) v = arr[i]; return v }

function ns(v) {
	if (v < 10000) return sprintf("%.0f ns", v)
	if (v < 10000000) return sprintf("%.1f µs", v / 1000)
	return sprintf("%.2f ms", v / 1e6)
}
function rate(v) {
	if (v >= 1e6) return sprintf("%.2f M/s", v / 1e6)
	return sprintf("%.0f k/s", v / 1e3)
}
function gbs(v) { return sprintf("%.2f GB/s", v / 1e9) }
function rat(v) { return v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : sprintf("%.2f", v) }

function label(k) {
	if (k in LABEL) return LABEL[k]
	return k
}

# select(c, k, r) - fills SEL[1..m] with the repetitions used for kind k
# against r in case c; sets USE (the tag) and NREP; returns m.
function select(c, k, r,    i, rp, t, cnt, m) {
	cnt["near"] = cnt["far"] = cnt["mixed"] = 0
	delete PT
	for (i = 1; i <= nrep[c]; i++) {
		rp = reps[c, i]
		if (!((c, rp, k) in tag) || !((c, rp, r) in tag)) continue
		t = tag[c, rp, k] == tag[c, rp, r] ? tag[c, rp, k] : "mixed"
		PT[i] = t
		cnt[t]++
	}
	USE = cnt["near"] >= cnt["far"] ? "near" : "far"
	if (cnt[USE] == 0) USE = "mixed"
	NREP = nrep[c]
	m = 0
	delete SEL
	for (i = 1; i <= nrep[c]; i++)
		if ((i in PT) && PT[i] == USE) SEL[++m] = reps[c, i]
	return m
}

# fstat(c, k, f, m) - MED, MIN, MAX of field f of kind k over SEL[1..m];
# returns 0 when a run lacks the field.
function fstat(c, k, f, m,    i, a) {
	for (i = 1; i <= m; i++) {
		if (!((c, SEL[i], k, f) in val)) return 0
		a[i] = val[c, SEL[i], k, f] + 0
	}
	MED = med(a, m); MIN = amin(a, m); MAX = amax(a, m)
	return m > 0
}

# qstat(c, k, fk, r, fr, m) - median [min-max] of val(r, fr) / val(k, fk).
function qstat(c, k, fk, r, fr, m,    i, a, x, y) {
	for (i = 1; i <= m; i++) {
		x = val[c, SEL[i], k, fk] + 0; y = val[c, SEL[i], r, fr] + 0
		if (x <= 0) return 0
		a[i] = y / x
	}
	MED = med(a, m); MIN = amin(a, m); MAX = amax(a, m)
	return m > 0
}

# per(c, k, f, m) - median over SEL of field f per million records.
function per(c, k, f, m,    i, a) {
	for (i = 1; i <= m; i++) {
		if (!((c, SEL[i], k, f) in val)) return "-"
		a[i] = val[c, SEL[i], k, f] / val[c, SEL[i], k, "records"] * 1e6
	}
	return m ? sprintf("%.3f", med(a, m)) : "-"
}
# perx(c, k, f, m) - the same per million records delivered to all the
# consumers (fan-out: records x consumers).
function perx(c, k, f, m,    i, a) {
	for (i = 1; i <= m; i++) {
		if (!((c, SEL[i], k, f) in val)) return "-"
		a[i] = val[c, SEL[i], k, f] / (val[c, SEL[i], k, "records"] * val[c, SEL[i], k, "consumers"]) * 1e6
	}
	return m ? sprintf("%.3f", med(a, m)) : "-"
}
function mib(c, k, f, m) {
	if (!fstat(c, k, f, m)) return "-"
	return sprintf("%.1f", MED / 1024)
}

BEGIN {
	LABEL["bus"] = "**bus**"
	LABEL["bare"] = "bare ping-pong (floor)"
	LABEL["classic"] = "bare ring, classic"
	LABEL["slot"] = "bare ring, slot (ceiling)"
	LABEL["uds-stream-spin"] = "Unix stream, busy-poll"
	LABEL["uds-stream-block"] = "Unix stream, blocking"
	LABEL["uds-seqpacket-spin"] = "Unix seqpacket, busy-poll"
	LABEL["uds-seqpacket-block"] = "Unix seqpacket, blocking"
	LABEL["pipe-spin"] = "pipe, busy-poll"
	LABEL["pipe-block"] = "pipe, blocking"
	LABEL["zmq-spin"] = "ZeroMQ ipc, DONTWAIT spin"
	LABEL["zmq-block"] = "ZeroMQ ipc, blocking"
	LABEL["iceoryx-spin"] = "iceoryx, busy-poll take"
	LABEL["iceoryx-wait"] = "iceoryx, WaitSet"
	nk = split(kinds, K, " ")
}

{
	delete kv
	for (i = 1; i <= NF; i++) if ((p = index($i, "=")) > 1) kv[substr($i, 1, p - 1)] = substr($i, p + 1)
	c = kv["case"]; rp = kv["rep"]; k = kv["kind"]
	tag[c, rp, k] = kv["tag"]
	for (f in kv) val[c, rp, k, f] = kv[f]
	if (!((c, rp) in seen)) { seen[c, rp] = 1; nrep[c]++; reps[c, nrep[c]] = rp }
}

END {
	if (what == "rtt") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) { printf "| %s | no data |||||||||\n", label(k); continue }
			row = "| " label(k)
			fstat(cs, k, "rtt_p50_ns", m); row = row sprintf(" | %s [%s-%s]", ns(MED), ns(MIN), ns(MAX))
			fstat(cs, k, "p90", m); row = row " | " ns(MED)
			fstat(cs, k, "p99", m); row = row " | " ns(MED)
			fstat(cs, k, "p999", m); row = row sprintf(" | %s [%s-%s]", ns(MED), ns(MIN), ns(MAX))
			fstat(cs, k, "p9999", m); row = row " | " ns(MED)
			fstat(cs, k, "max", m); row = row " | " ns(MED)
			fstat(cs, k, "n", m); row = row sprintf(" | %.0fk", MED / 1000)
			if (k == ref) row = row " | 1 | 1"
			else {
				qstat(cs, k, "rtt_p50_ns", ref, "rtt_p50_ns", m); row = row sprintf(" | %s [%s-%s]", rat(MED), rat(MIN), rat(MAX))
				qstat(cs, k, "p999", ref, "p999", m); row = row sprintf(" | %s [%s-%s]", rat(MED), rat(MIN), rat(MAX))
			}
			printf "%s | %s %d/%d |\n", row, USE, m, NREP
		}
	} else if (what == "tput") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) { printf "| %s | no data ||||||||\n", label(k); continue }
			row = "| " label(k)
			fstat(cs, k, "recs_per_s", m); row = row sprintf(" | %s [%s-%s]", rate(MED), rate(MIN), rate(MAX))
			fstat(cs, k, "bytes_per_s", m); row = row " | " gbs(MED)
			if (k == ref) row = row " | 1"
			else { qstat(cs, k, "recs_per_s", ref, "recs_per_s", m); row = row sprintf(" | %s [%s-%s]", rat(MED), rat(MIN), rat(MAX)) }
			row = row " | " per(cs, k, "prod_cpu_s", m) " | " per(cs, k, "cons_cpu_s", m)
			row = row " | " mib(cs, k, "prod_hwm_kb", m) " | " mib(cs, k, "cons_hwm_kb", m)
			printf "%s | %s %d/%d |\n", row, USE, m, NREP
		}
	} else if (what == "fanout") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) { printf "| %s | no data |||||||\n", k; continue }
			fstat(cs, k, "consumers", m); row = sprintf("| %d", MED)
			row = row " | " val[cs, SEL[1], k, "wait"]
			fstat(cs, k, "delivered_per_s", m); row = row sprintf(" | %s [%s-%s]", rate(MED), rate(MIN), rate(MAX))
			fstat(cs, k, "slowest_per_s", m); row = row " | " rate(MED)
			if (k == ref) row = row " | 1"
			else { qstat(cs, ref, "delivered_per_s", k, "delivered_per_s", m); row = row sprintf(" | %s [%s-%s]", rat(MED), rat(MIN), rat(MAX)) }
			row = row " | " per(cs, k, "prod_cpu_s", m) " | " perx(cs, k, "cons_cpu_s", m)
			printf "%s | %s %d/%d |\n", row, USE, m, NREP
		}
	} else if (what == "idle") {
		k = K[1]
		m = select(cs, k, k)
		if (m == 0) { print "| no data |||||"; exit }
		fstat(cs, k, "secs", m); row = sprintf("| %.0f s", MED)
		fstat(cs, k, "cons_cpu_s", m); row = row sprintf(" | %.1f ms [%.1f-%.1f]", MED * 1e3, MIN * 1e3, MAX * 1e3)
		fstat(cs, k, "cpu_pct", m); row = row sprintf(" | %.3f %% [%.3f-%.3f]", MED, MIN, MAX)
		fstat(cs, k, "wake_ns", m); row = row sprintf(" | %s [%s-%s]", ns(MED), ns(MIN), ns(MAX))
		printf "%s | %s %d/%d |\n", row, USE, m, NREP
	} else if (what == "plotrtt") {
		split("rtt_p50_ns p90 p99 p999 p9999 max", F, " ")
		split("2 10 100 1000 10000 100000", X, " ")
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			printf "# %s\n", k
			if (m == 0) { print "1 1"; printf "\n\n"; continue }
			for (i = 1; i <= 6; i++) { fstat(cs, k, F[i], m); printf "%s %.0f\n", X[i], MED }
			printf "\n\n"
		}
	} else if (what == "plottput") {
		m = select(cs, kinds, ref)
		if (m && fstat(cs, kinds, "bytes_per_s", m)) printf "%s %.0f\n", size, MED
	} else if (what == "plotfan") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) continue
			fstat(cs, k, "consumers", m); n = MED
			fstat(cs, k, "delivered_per_s", m); d = MED
			fstat(cs, k, "slowest_per_s", m)
			printf "%d %.0f %.0f\n", n, d, MED
		}
	} else if (what == "tsummary") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) continue
			fstat(cs, k, "recs_per_s", m); row = "| " label(k) " | " rate(MED)
			fstat(cs, k, "bytes_per_s", m); row = row " | " gbs(MED)
			if (k == ref) row = row " | 1"
			else { qstat(cs, k, "recs_per_s", ref, "recs_per_s", m); row = row " | " rat(MED) }
			print row " |"
		}
	} else if (what == "summary") {
		for (j = 1; j <= nk; j++) {
			k = K[j]
			m = select(cs, k, ref)
			if (m == 0) continue
			fstat(cs, k, "rtt_p50_ns", m); row = "| " label(k) " | " ns(MED)
			fstat(cs, k, "p999", m); row = row " | " ns(MED)
			if (k == ref) row = row " | 1"
			else { qstat(cs, k, "rtt_p50_ns", ref, "rtt_p50_ns", m); row = row " | " rat(MED) }
			print row " |"
		}
	}
}
