/**
 * The real client address behind load balancers. X-Forwarded-For is believed only when the peer is
 * in WS_TRUSTED_PROXIES, and then only as far as the chain stays inside trusted proxies: the
 * address is the rightmost entry not itself a trusted proxy. A spoofed header from an untrusted
 * peer changes nothing.
 */
import { BlockList, isIP } from 'node:net';

export type ClientAddress = (peer: string, forwardedFor: string) => string;

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
