#!/bin/sh
# One benchmark per engine per size, one at a time (2 cores: never two benchmarks at once), then
# the 10k-children ingest profile. Usage: sh benchmarks/run_all.sh WORKDIR [SIZES...]
# Default sizes: 1000 10000. Each cohort is synthesised once and shared by both engines.
# Larger sizes: run benchmarks.statewide directly (see README.md for the commands used).
set -eu
work=${1:?usage: run_all.sh WORKDIR [SIZES...]}
shift
sizes=${*:-1000 10000}
py=${PYTHON:-.venv/bin/python}
for n in $sizes; do
    $py -m benchmarks.statewide --patients "$n" --engine sqlite --work "$work/$n" --keep-data
    $py -m benchmarks.statewide --patients "$n" --engine postgresql --work "$work/$n" --keep-data
    if [ "$n" = 10000 ]; then
        $py -m benchmarks.profiling ingest --patients "$n" --engine sqlite --work "$work/$n" \
            --out benchmarks/profiles/ingest-sqlite-10k.txt
    fi
    rm -rf "$work/$n"
done
