#!/bin/bash
# Lets the replica container stream from the primary (runs once, at initdb).
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
