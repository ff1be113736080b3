#!/bin/sh
# The image's entrypoint: restore the database when the volume has none, then
# run invigil under Litestream, which streams every commit to the bucket and
# forwards Fly's SIGTERM to invigil, waits for it to drain, then makes a last
# sync before it exits (docs/runbooks.md, "Restore from backup").
#
# Environment: INVIGIL_DB (the image sets /data/invigil.db, as litestream.yml
# does); BUCKET_NAME, AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION (set by `fly storage create`);
# LITESTREAM_CONFIG (default /etc/litestream.yml); INVIGIL_RUN_AS (default
# invigil: the user the server runs as when started as root; empty: stay).
set -eu

db=${INVIGIL_DB:-/data/invigil.db}
dir=$(dirname "$db")
config=${LITESTREAM_CONFIG:-/etc/litestream.yml}
run_as=${INVIGIL_RUN_AS-invigil}

log() { echo "entrypoint: $*" >&2; }

mkdir -p "$dir"

# A point-in-time restore prepared while serving (docs/runbooks.md,
# "Point-in-time restore") is swapped in here, before anything opens the
# database. The current one is kept aside, and Litestream's local state for
# it is dropped, so that Litestream starts a new snapshot of the restored file.
if [ -e "$db.restored" ]; then
	aside="$db.replaced-$(date -u +%Y%m%dT%H%M%SZ)"
	log "swapping in $db.restored; the current database goes to $aside"
	for suffix in "" -wal -shm; do
		if [ -e "$db$suffix" ]; then
			mv "$db$suffix" "$aside$suffix"
		fi
	done
	rm -rf "$dir/.$(basename "$db")-litestream"
	mv "$db.restored" "$db"
fi

# A Fly volume is mounted owned by root, whatever the image's /data was, and
# files an operator made over `fly ssh console` are root's too. Give them all
# to the server's user, then drop root for everything that follows.
as_user=""
if [ "$(id -u)" = 0 ] && [ -n "$run_as" ]; then
	chown -R "$run_as:$run_as" "$dir"
	as_user="su-exec $run_as"
fi

if [ -z "${BUCKET_NAME:-}" ]; then
	# Serving without backups beats not serving on exam day, but say it loudly.
	log "WARNING: BUCKET_NAME is not set, so there is NO continuous backup:"
	log "run 'fly storage create' (docs/deploy.md). Starting invigil without Litestream."
	exec $as_user invigil "$@"
fi

if [ -e "$db" ]; then
	log "database $db present: no restore"
else
	# -if-replica-exists: the very first start has no backup and starts empty.
	# Any other failure (bucket unreachable, bad keys) stops the start: an
	# empty database replicated over a good backup would be far worse.
	log "no database at $db: restoring from the bucket $BUCKET_NAME"
	start=$(date +%s)
	$as_user litestream restore -config "$config" -if-db-not-exists -if-replica-exists \
		-integrity-check quick "$db"
	log "restore step done in $(($(date +%s) - start))s"
fi

exec $as_user litestream replicate -config "$config" -exec "invigil $*"
