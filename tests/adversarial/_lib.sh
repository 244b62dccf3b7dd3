# Prepended to every case's script: a valid submission, and findings reported on stderr (which
# reaches only the operators' log, where the suite reads it back).
set -u
OUT="${SCORER_SUBMISSION_PATH:-/output/submission.csv}"
found=""
valid() { sed 's/,0\.5$/,0.7/' /data/sample_submission.csv > "$OUT"; }
finding() { found="$found $1"; echo "FINDING: $1" >&2; }
# A probe's end: always a valid file; exit 3 (NONZERO_EXIT) if anything got through.
verdict() {
  valid
  if [ -z "$found" ]; then echo "RESULT: clean" >&2; exit 0; fi
  echo "RESULT: found$found" >&2
  exit 3
}
