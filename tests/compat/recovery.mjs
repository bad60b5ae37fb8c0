// Helpers shared by the history tests (history.test.mjs, history-cluster.test.mjs): the official
// client's recovery opt-in as the README describes it, and the processes of a cluster.
import {readdirSync, readFileSync} from 'node:fs';
import {sleep} from './harness.mjs';

/** `promise`, or a rejection naming `what` after `ms`. */
export function within(promise, what, ms = 3000) {
  const timeout = sleep(ms).then(() => Promise.reject(new Error(`timed out waiting for ${what}`)));
  return Promise.race([promise, timeout]);
}

export const range = (from, to) => Array.from({length: to - from + 1}, (_, i) => from + i);

/**
 * The official client's opt-in, as in the README: socketcluster-client v20 keeps the
 * subscription's `data` object by reference and resends it with every `#subscribe`, so the last
 * position seen in the raw `#publish` frames (its channel iterator yields only the data) goes
 * into `data.recover`.
 */
export function recoverWithOfficialClient(socket, channelName) {
  const data = {};
  (async () => {
    for await (const {message} of socket.listener('message')) {
      if (typeof message !== 'string' || !message.includes('"offset"')) continue;
      let packets;
      try {
        packets = [JSON.parse(message)].flat();
      } catch {
        continue;
      }
      for (const p of packets) {
        if (p?.event === '#publish' && p.data?.channel === channelName && typeof p.data.offset === 'number') {
          data.recover = {offset: p.data.offset, epoch: p.data.epoch};
        }
      }
    }
  })();
  return socket.subscribe(channelName, {data});
}

/** The live children of process `parent` that a cluster master started as `role` (`SC_ROLE`). */
export function childrenOf(parent, role) {
  const pids = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      if (Number(fields[1]) !== parent || fields[0] === 'Z') continue;
      const environ = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
      if (environ.includes(`SC_ROLE=${role}`)) pids.push(pid);
    } catch {
      // gone meanwhile, or not ours
    }
  }
  return pids;
}
