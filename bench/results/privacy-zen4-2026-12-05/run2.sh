#!/usr/bin/env bash
cd /tmp/dprun
while pgrep -f "dpbin/fedcsg local" >/dev/null; do sleep 5; done
echo "csg-none-dp-off done" >> done.txt
common="--workers 4 --rounds 10 --data fashion-mnist --max-samples 1500 --bn-stats local --seed 0"
for pair in "12-72 8" "none 8" "12-72 2" "none 2" "12-72 off"; do
  set -- $pair; csg=$1; dp=$2
  name="csg-${csg}-dp-${dp}"
  extra=""
  [ "$dp" != off ] && extra="--dp central --dp-epsilon $dp --dp-clip-norm 1"
  /tmp/dpbin/fedcsg local $common --csg $csg $extra --summary-json $name.json > $name.log 2>&1
  echo "$name rc=$?" >> done.txt
done
