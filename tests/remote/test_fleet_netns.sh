#!/usr/bin/env bash
# A fleet across network namespaces: three moatd, each in a namespace of its
# own joined to this one by a veth pair (10.77.N.2, reached over 10.77.N.1),
# named by one URI. Loads by `moat run` (a process each) spread over the
# three (each moatd's log counts the sessions it loaded); with one target killed, every new load
# still succeeds, on the other two. Needs root and iproute2; skipped (77)
# with a message otherwise.
#   test_fleet_netns.sh MOATD MOAT ENCLAVE_DIR
set -u
moatd=$1 moat=$2 enclaves=$3
tag="mf$$"
dir=$(mktemp -d "${TMPDIR:-/tmp}/moat-netns-XXXXXX")
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  for n in 0 1 2; do ip netns del "$tag-$n" 2>/dev/null; ip link del "$tag-r$n" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for n in 0 1 2; do echo "--- target $n:"; tail -5 "$dir/log$n" 2>/dev/null; done; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces)"
command -v ip >/dev/null || skip "needs iproute2's ip"
ip netns add "$tag-probe" 2>/dev/null || skip "this kernel or sandbox does not allow network namespaces"
ip netns del "$tag-probe"

uri="grpc://"
for n in 0 1 2; do
  ns="$tag-$n"
  ip netns add "$ns" || fail "ip netns add"
  ip link add "$tag-r$n" type veth peer name "$tag-t$n" || fail "ip link add veth"
  ip link set "$tag-t$n" netns "$ns"
  ip addr add "10.77.$n.1/24" dev "$tag-r$n"
  ip link set "$tag-r$n" up
  ip netns exec "$ns" ip addr add "10.77.$n.2/24" dev "$tag-t$n"
  ip netns exec "$ns" ip link set "$tag-t$n" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" "$moatd" --listen "10.77.$n.2:7070" --backend sim --enclave-dir "$enclaves" \
    --state-dir "$dir/state$n" --ready-file "$dir/ready$n" --log-level info >/dev/null 2>"$dir/log$n" &
  pids+=($!)
  uri+="$([ "$n" -gt 0 ] && echo ,)10.77.$n.2:7070"
done
for n in 0 1 2; do
  for _ in $(seq 1 100); do [ -s "$dir/ready$n" ] && break; sleep 0.05; done
  [ -s "$dir/ready$n" ] || fail "target $n did not start"
done

loads() { # loads N: N sessions by name over the fleet, one `moat run` each; all must answer
  local i out
  for i in $(seq 1 "$1"); do
    out=$(timeout 30 "$moat" run --backend "$uri" --by-name hello_enclave 2>&1) || fail "load $i: $out"
    [ -n "$out" ] || fail "load $i printed nothing"
  done
}
count() { grep -c "session .*: loaded" "$dir/log$1"; }

# Each `moat run` is a process of its own that loads once: its first pick is the first target ready, in a
# random order of the list, so the spread is random; every target must take part (at least 2 of 24: a
# uniform spread misses that about once in a thousand runs).
loads 24
c0=$(count 0) c1=$(count 1) c2=$(count 2)
echo "24 loads over $uri: $c0, $c1 and $c2"
for c in "$c0" "$c1" "$c2"; do [ "$c" -ge 2 ] || fail "a target got $c of 24 sessions"; done

kill -KILL "${pids[0]}"
wait "${pids[0]}" 2>/dev/null
loads 6
d1=$(( $(count 1) - c1 )) d2=$(( $(count 2) - c2 ))
echo "with the first target killed: 6 loads, $d1 and $d2 on the others"
[ $((d1 + d2)) -eq 6 ] || fail "the 6 loads did not all land on the live targets"
echo "PASS"
