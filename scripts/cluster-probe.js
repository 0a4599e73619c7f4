#!/usr/bin/env node
// The CQL and AMQP side of scripts/cluster.sh (the local 3-node test clusters), with the project's
// cassandra-driver and amqplib.
//
//   cassandra-wait <n>     wait until node n (127.0.0.n) accepts a login and answers
//                          `SELECT release_version FROM system.local`; stop at once if CLUSTER_PID dies
//   cassandra-setup        with all three contact points: wait until the driver is connected to 3 hosts, raise
//                          system_auth to RF 3 (and copy its rows to every node by reading them at ALL), create the
//                          keyspace, then check that each node lists 2 peers
//   rabbit-declare <port> <queue>
//                          declare a durable quorum queue through the node on 127.0.0.1:<port>
//   verify                 a message published to a quorum queue through the first RabbitMQ node is read through
//                          the third; a row written at LOCAL_QUORUM is read back at LOCAL_QUORUM
//
// Environment (cluster.sh sets them): CLUSTER_CQL_PORT, CLUSTER_KEYSPACE, CLUSTER_AMQP_PORTS (comma separated),
// CLUSTER_WAIT_MS, CLUSTER_PID, CASSANDRA_USERNAME / CASSANDRA_PASSWORD.
// Exit codes: 0 done, 1 failed or timed out, 2 the process waited on died.
'use strict';

const fs = require('fs');
const cassandra = require('cassandra-driver');

const CQL_PORT = Number(process.env.CLUSTER_CQL_PORT || 9242);
const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.0.0.3'];
const KEYSPACE = process.env.CLUSTER_KEYSPACE || 'celery_cluster';
const AMQP_PORTS = (process.env.CLUSTER_AMQP_PORTS || '5681,5682,5683').split(',').map(Number);
const WAIT_MS = Number(process.env.CLUSTER_WAIT_MS || 180000);
const USERNAME = process.env.CASSANDRA_USERNAME || 'cassandra';
const PASSWORD = process.env.CASSANDRA_PASSWORD || 'cassandra';
const { consistencies } = cassandra.types;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (line) => console.log(`[cluster] ${line}`);

function processIsAlive(pid) {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'; // a dead child not yet reaped is a zombie
  } catch {
    return false;
  }
}

// onlyAddress: a client that sends every request to that node only (the others are still discovered).
function newClient(onlyAddress) {
  const localDc = new cassandra.policies.loadBalancing.DCAwareRoundRobinPolicy('datacenter1');
  return new cassandra.Client({
    contactPoints: onlyAddress ? [onlyAddress] : ADDRESSES,
    protocolOptions: { port: CQL_PORT }, // also the port of the peers the driver finds in system.peers
    localDataCenter: 'datacenter1',
    authProvider: new cassandra.auth.PlainTextAuthProvider(USERNAME, PASSWORD),
    socketOptions: { connectTimeout: 3000, readTimeout: 15000 },
    policies: onlyAddress
      ? { loadBalancing: new cassandra.policies.loadBalancing.AllowListPolicy(localDc, [`${onlyAddress}:${CQL_PORT}`]) }
      : undefined,
  });
}

async function cassandraWait(n) {
  const address = ADDRESSES[n - 1];
  const pid = Number(process.env.CLUSTER_PID || 0);
  const deadline = Date.now() + WAIT_MS;
  let lastError = '';
  for (;;) {
    if (pid && !processIsAlive(pid)) {
      console.error(`[cluster] Cassandra node ${n} (pid ${pid}) died before accepting CQL (last error: ${lastError})`);
      process.exit(2);
    }
    const client = newClient(address);
    try {
      const rs = await client.execute('SELECT release_version FROM system.local');
      say(`cassandra node ${n}: CQL answers on ${address}:${CQL_PORT}, release_version ${rs.first().release_version}`);
      await client.shutdown();
      return;
    } catch (err) {
      lastError = err.message;
      await client.shutdown().catch(() => {});
    }
    if (Date.now() >= deadline) {
      console.error(`[cluster] Cassandra node ${n} did not answer CQL on ${address}:${CQL_PORT} within ${WAIT_MS / 1000} s: ${lastError}`);
      process.exit(1);
    }
    await sleep(1000);
  }
}

function hostOf(client, address) {
  return client.hosts.get(`${address}:${CQL_PORT}`);
}

// Waits until the driver holds open connections to all three nodes.
async function connectToAll() {
  const deadline = Date.now() + WAIT_MS;
  const client = newClient();
  await client.connect();
  for (;;) {
    // A query to each node opens its pool if it is not open yet.
    for (const address of ADDRESSES) {
      const host = hostOf(client, address);
      if (host) await client.execute('SELECT key FROM system.local', [], { host }).catch(() => {});
    }
    const connected = client.getState().getConnectedHosts().map((h) => h.address);
    if (connected.length === 3) return client;
    if (Date.now() >= deadline) {
      await client.shutdown();
      throw new Error(`the driver is connected to ${connected.length} hosts (${connected.join(', ')}), not 3`);
    }
    await sleep(1000);
  }
}

async function checkPeers(client) {
  for (const address of ADDRESSES) {
    const host = hostOf(client, address);
    if (!host) throw new Error(`the driver does not know the node ${address}:${CQL_PORT}`);
    const rs = await client.execute('SELECT peer FROM system.peers', [], { host });
    const peers = rs.rows.map((row) => row.peer.toString()).sort();
    if (peers.length !== 2) throw new Error(`${address} lists ${peers.length} peers (${peers.join(', ')}), not 2`);
    say(`cassandra ${address}: peers ${peers.join(', ')}`);
  }
  const connected = client.getState().getConnectedHosts().map((h) => h.address).sort();
  if (connected.length !== 3) throw new Error(`the driver is connected to ${connected.length} hosts, not 3`);
  say(`cassandra: driver connected to ${connected.join(', ')}`);
}

async function cassandraSetup() {
  const client = await connectToAll();
  try {
    // Every pool logged in above, before system_auth changes: right after the ALTER a login could read a node
    // that has no copy of the role yet.
    await client.execute(
      "ALTER KEYSPACE system_auth WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}",
    );
    // With RF 1 each role row lived on one node; a read at ALL repairs the other two replicas (no nodetool here).
    for (const table of ['roles', 'role_members', 'role_permissions']) {
      await client.execute(`SELECT * FROM system_auth.${table}`, [], { consistency: consistencies.all });
    }
    await client.execute('SELECT * FROM system_auth.roles WHERE role = ?', [USERNAME], {
      prepare: true,
      consistency: consistencies.all,
    });
    say("cassandra: system_auth has replication {'datacenter1': 3}, its rows read at ALL");
    await client.execute(
      `CREATE KEYSPACE IF NOT EXISTS ${KEYSPACE} ` +
        "WITH replication = {'class': 'NetworkTopologyStrategy', 'datacenter1': 3}",
    );
    const ks = await client.execute(
      'SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?',
      [KEYSPACE],
      { prepare: true },
    );
    say(`cassandra: keyspace ${KEYSPACE} exists, replication ${JSON.stringify(ks.first().replication)}`);
    await checkPeers(client);
  } finally {
    await client.shutdown();
  }
}

async function rabbitDeclare(port, queue) {
  const amqp = require('amqplib');
  const connection = await amqp.connect(`amqp://guest:guest@127.0.0.1:${port}`);
  try {
    const channel = await connection.createChannel();
    await channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    say(`rabbitmq: quorum queue ${queue} declared through 127.0.0.1:${port}`);
  } finally {
    await connection.close();
  }
}

async function verifyRabbit() {
  const amqp = require('amqplib');
  const [first, , third] = AMQP_PORTS;
  const queue = `cluster-verify-${process.pid}`;
  const body = `cluster verify ${new Date().toISOString()}`;
  const publisher = await amqp.connect(`amqp://guest:guest@127.0.0.1:${first}`);
  const consumer = await amqp.connect(`amqp://guest:guest@127.0.0.1:${third}`);
  try {
    const pub = await publisher.createConfirmChannel();
    await pub.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    pub.sendToQueue(queue, Buffer.from(body), { persistent: true });
    await pub.waitForConfirms();
    const sub = await consumer.createChannel();
    let message = false;
    for (let i = 0; i < 50 && !message; i++) {
      message = await sub.get(queue, { noAck: false });
      if (!message) await sleep(100);
    }
    if (!message) throw new Error(`the message published through ${first} was not read through ${third}`);
    if (message.content.toString() !== body) throw new Error(`read "${message.content}" instead of "${body}"`);
    sub.ack(message);
    await sub.deleteQueue(queue);
    say(`verify rabbitmq: published to quorum queue ${queue} through 127.0.0.1:${first} (confirmed), read it through 127.0.0.1:${third}, queue deleted`);
  } finally {
    await publisher.close().catch(() => {});
    await consumer.close().catch(() => {});
  }
}

async function verifyCassandra() {
  const client = await connectToAll();
  try {
    await checkPeers(client);
    await client.execute(`CREATE TABLE IF NOT EXISTS ${KEYSPACE}.cluster_smoke (id text PRIMARY KEY, value text)`);
    const id = `verify-${process.pid}`;
    const value = new Date().toISOString();
    const quorum = { prepare: true, consistency: consistencies.localQuorum };
    await client.execute(`INSERT INTO ${KEYSPACE}.cluster_smoke (id, value) VALUES (?, ?)`, [id, value], quorum);
    const rs = await client.execute(`SELECT value FROM ${KEYSPACE}.cluster_smoke WHERE id = ?`, [id], quorum);
    const read = rs.first() && rs.first().value;
    if (read !== value) throw new Error(`read ${read} at LOCAL_QUORUM, wrote ${value}`);
    say(`verify cassandra: row ${id} written and read at LOCAL_QUORUM in ${KEYSPACE}.cluster_smoke (coordinator ${rs.info.queriedHost})`);
    await client.execute(`DELETE FROM ${KEYSPACE}.cluster_smoke WHERE id = ?`, [id], quorum);
  } finally {
    await client.shutdown();
  }
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  switch (mode) {
    case 'cassandra-wait':
      return cassandraWait(Number(args[0]));
    case 'cassandra-setup':
      return cassandraSetup();
    case 'rabbit-declare':
      return rabbitDeclare(Number(args[0]), args[1]);
    case 'verify':
      await verifyRabbit();
      return verifyCassandra();
    default:
      console.error('usage: node scripts/cluster-probe.js cassandra-wait <n> | cassandra-setup | rabbit-declare <port> <queue> | verify');
      process.exit(2);
  }
}

main().catch((err) => {
  console.error(`[cluster] FAILED: ${err.message}`);
  process.exit(1);
});
