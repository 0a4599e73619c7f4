#!/usr/bin/env node
// Waits until the local Cassandra answers CQL, then creates the test keyspace. Called by scripts/services.sh.
// Readiness is the probe testcontainers uses: `SELECT release_version FROM system.local` succeeds
// (../shared/cassandra-test-node.md 4.2); an open port alone is not enough once PasswordAuthenticator is on.
//
// Environment:
//   CASS_WAIT_MS         give up after this many milliseconds (default 180000)
//   CASS_PID             pid of the Cassandra JVM; stop waiting at once if it dies
//   CASS_PORT            CQL port on 127.0.0.1 (default 9042)
//   CASSANDRA_KEYSPACE   keyspace to create if it does not exist (SimpleStrategy, RF 1); none if empty.
//                        It goes into the CQL as it is: services.sh admits only plain identifiers.
//   CASSANDRA_USERNAME / CASSANDRA_PASSWORD   log in with these (needed with PasswordAuthenticator)
// Exit codes: 0 ready, 1 timed out or keyspace creation failed, 2 the process died.
'use strict';

const fs = require('fs');
const cassandra = require('cassandra-driver');

const CONTACT_POINT = `127.0.0.1:${process.env.CASS_PORT || 9042}`;
const waitMs = Number(process.env.CASS_WAIT_MS || 180000);
const pid = Number(process.env.CASS_PID || 0);
const keyspace = process.env.CASSANDRA_KEYSPACE || '';
const { CASSANDRA_USERNAME: username, CASSANDRA_PASSWORD: password } = process.env;

function processIsAlive(id) {
  try {
    process.kill(id, 0);
  } catch {
    return false;
  }
  // A dead child its parent has not reaped yet still answers kill(0); /proc shows it as a zombie.
  try {
    const stat = fs.readFileSync(`/proc/${id}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true;
  }
}

function newClient() {
  return new cassandra.Client({
    contactPoints: [CONTACT_POINT],
    localDataCenter: 'datacenter1',
    authProvider: username ? new cassandra.auth.PlainTextAuthProvider(username, password || '') : undefined,
    socketOptions: { connectTimeout: 2000, readTimeout: 10000 },
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function connectWhenReady() {
  const deadline = Date.now() + waitMs;
  let lastError = '';
  for (;;) {
    if (pid && !processIsAlive(pid)) {
      console.error(`[services] Cassandra process ${pid} died before accepting CQL${lastError ? ` (last error: ${lastError})` : ''}`);
      process.exit(2);
    }
    const client = newClient();
    try {
      const rs = await client.execute('SELECT release_version FROM system.local');
      console.log(`[services] cassandra: CQL answers on ${CONTACT_POINT}, release_version ${rs.first().release_version}`);
      return client;
    } catch (err) {
      lastError = err.message;
      await client.shutdown().catch(() => {});
      // Waiting cannot fix a missing login (a wrong password, though, can: the superuser appears just after start).
      if (!username && /requires authentication/.test(lastError)) {
        console.error(
          `[services] Cassandra requires a login: set CASSANDRA_USERNAME and CASSANDRA_PASSWORD (${lastError})`,
        );
        process.exit(1);
      }
    }
    if (Date.now() >= deadline) {
      console.error(`[services] Cassandra did not answer CQL on ${CONTACT_POINT} within ${waitMs / 1000} s: ${lastError}`);
      process.exit(1);
    }
    await sleep(1000);
  }
}

async function main() {
  const client = await connectWhenReady();
  try {
    if (keyspace) {
      await client.execute(
        `CREATE KEYSPACE IF NOT EXISTS ${keyspace} ` +
          "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
      );
      console.log(`[services] cassandra: keyspace ${keyspace} exists`);
    }
  } catch (err) {
    console.error(`[services] could not create keyspace ${keyspace}: ${err.message}`);
    process.exitCode = 1;
  } finally {
    await client.shutdown();
  }
}

main();
