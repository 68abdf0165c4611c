/**
 * The real client address behind load balancers. X-Forwarded-For is believed only when the peer is
 * in WS_TRUSTED_PROXIES, and then only as far as the chain stays inside trusted proxies: the
 * address is the rightmost entry not itself a trusted proxy. A spoofed header from an untrusted
 * peer changes nothing.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { BlockList, isIP } from 'node:net';

/** `relay`: the X-WsEdge-Relay header ('' when absent), believed only from loopback (see `createRelayTrust`). */
export type ClientAddress = (peer: string, forwardedFor: string, relay?: string) => string;

/** The header a fallback session's loopback socket carries: `<secret> <client address>` (fallback.ts). */
export const RELAY_HEADER = 'x-wsedge-relay';

export interface RelayTrust {
  /** The header value for a loopback socket acting for `address`. Never logged. */
  header(address: string): string;
  /** The client address a relay header vouches for; undefined unless the peer is loopback and the secret matches. */
  vouched(peer: string, relay: string): string | undefined;
}

/**
 * Where the relay's own socket comes from: loopback (127.0.0.0/8, ::1, in any spelling uWS gives,
 * IPv4-mapped included), or the node's own address when it listens on one (`host`) and dials it.
 */
function relaySources(host: string): BlockList {
  const list = new BlockList();
  list.addSubnet('127.0.0.0', 8, 'ipv4');
  list.addAddress('::1', 'ipv6');
  const family = isIP(host);
  if (family !== 0) list.addAddress(host, family === 6 ? 'ipv6' : 'ipv4');
  return list;
}

/**
 * A random secret per process: only this process's own fallback relay knows it, and it is
 * believed only on a socket from the node itself, compared in constant time, so no client can
 * claim an address.
 */
export function createRelayTrust(host: string): RelayTrust {
  const secret = randomBytes(24).toString('base64url');
  const expected = Buffer.from(secret);
  const sources = relaySources(host);
  const fromNode = (peer: string): boolean => {
    const address = peer.trim();
    const family = isIP(address);
    return family !== 0 && sources.check(address, family === 6 ? 'ipv6' : 'ipv4');
  };
  return {
    header: (address) => `${secret} ${address}`,
    vouched(peer, relay) {
      const space = relay.indexOf(' ');
      if (space < 0 || !fromNode(peer)) return undefined;
      const given = Buffer.from(relay.slice(0, space));
      const address = relay.slice(space + 1);
      return given.length === expected.length && timingSafeEqual(given, expected) && isIP(address) !== 0 ? address : undefined;
    },
  };
}

/** The address a fallback relay vouches for, else what `inner` finds. */
export function withRelay(inner: ClientAddress, trust: RelayTrust): ClientAddress {
  return (peer, forwardedFor, relay = '') => (relay === '' ? undefined : trust.vouched(peer, relay)) ?? inner(peer, forwardedFor);
}

/** Validates one WS_TRUSTED_PROXIES entry: an IP address or a CIDR block. */
export function isAddressOrCidr(entry: string): boolean {
  const [address, bits, extra] = entry.split('/');
  if (extra !== undefined || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 4 ? 32 : 128);
}

/** uWS writes IPv4 peers of dual-stack sockets as IPv4-mapped IPv6. */
function normalize(address: string): string {
  const trimmed = address.trim();
  return trimmed.startsWith('::ffff:') && isIP(trimmed.slice(7)) === 4 ? trimmed.slice(7) : trimmed;
}

export function createClientAddress(trusted: readonly string[]): ClientAddress {
  if (trusted.length === 0) return (peer) => normalize(peer);
  const list = new BlockList();
  for (const entry of trusted) {
    const [address, bits] = entry.split('/') as [string, string | undefined];
    const type = isIP(address) === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(bits), type);
  }
  const isTrusted = (address: string): boolean => {
    const family = isIP(address);
    return family !== 0 && list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  };
  return (peer, forwardedFor) => {
    const direct = normalize(peer);
    if (forwardedFor === '' || !isTrusted(direct)) return direct;
    const hops = forwardedFor.split(',').map(normalize);
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!;
      if (isIP(hop) === 0) return direct; // garbage in the chain: believe only the socket
      if (!isTrusted(hop)) return hop;
    }
    return hops[0] ?? direct;
  };
}
