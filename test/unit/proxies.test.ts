import { describe, expect, it } from 'vitest';
import { createClientAddress, createRelayTrust, isAddressOrCidr } from '../../src/proxies.js';

describe('isAddressOrCidr', () => {
  it.each(['10.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8', '192.168.1.0/24', '0.0.0.0/0'])('accepts %s', (entry) => {
    expect(isAddressOrCidr(entry)).toBe(true);
  });
  it.each(['', 'haproxy', '10.0.0.0/33', '::1/129', '10.0.0.1/8/1', '10.0.0/8', '10.0.0.0/x', '300.1.1.1'])('refuses %j', (entry) => {
    expect(isAddressOrCidr(entry)).toBe(false);
  });
});

describe('createClientAddress', () => {
  it('uses the socket address when no proxy is trusted, whatever the header says', () => {
    const address = createClientAddress([]);
    expect(address('203.0.113.7', '198.51.100.1')).toBe('203.0.113.7');
  });

  it('ignores X-Forwarded-For from an untrusted peer (spoofing changes nothing)', () => {
    const address = createClientAddress(['10.0.0.0/8']);
    expect(address('203.0.113.7', '198.51.100.1')).toBe('203.0.113.7');
  });

  it('takes the rightmost untrusted hop when the peer is a trusted proxy', () => {
    const address = createClientAddress(['10.0.0.0/8']);
    expect(address('10.0.0.5', '198.51.100.1')).toBe('198.51.100.1');
    // A client-supplied entry on the left cannot win: the proxy appended the real address.
    expect(address('10.0.0.5', '1.2.3.4, 198.51.100.1')).toBe('198.51.100.1');
    // Several trusted proxies in the chain are skipped.
    expect(address('10.0.0.5', '198.51.100.1, 10.1.1.1, 10.2.2.2')).toBe('198.51.100.1');
  });

  it('uses the socket address when the header is missing or holds garbage', () => {
    const address = createClientAddress(['127.0.0.1']);
    expect(address('127.0.0.1', '')).toBe('127.0.0.1');
    expect(address('127.0.0.1', 'not-an-ip')).toBe('127.0.0.1');
  });

  it('unwraps IPv4-mapped IPv6 addresses', () => {
    const address = createClientAddress(['127.0.0.1']);
    expect(address('::ffff:127.0.0.1', '::ffff:198.51.100.9')).toBe('198.51.100.9');
  });

  it('falls back to the leftmost hop when every hop is trusted', () => {
    const address = createClientAddress(['10.0.0.0/8']);
    expect(address('10.0.0.5', '10.9.9.9, 10.8.8.8')).toBe('10.9.9.9');
  });
});

describe('createRelayTrust', () => {
  it('believes its own secret from the node itself, in every spelling uWS gives a loopback peer, and nothing else', () => {
    const trust = createRelayTrust('0.0.0.0');
    const header = trust.header('203.0.113.7');
    // HOST=:: gives the long IPv4-mapped form; ::1 may come long too.
    for (const peer of ['127.0.0.1', '127.0.0.2', '::1', '::ffff:127.0.0.1', '0000:0000:0000:0000:0000:ffff:7f00:0001', '0000:0000:0000:0000:0000:0000:0000:0001']) {
      expect(trust.vouched(peer, header), peer).toBe('203.0.113.7');
    }
    for (const peer of ['10.0.0.5', '::ffff:10.0.0.5', '203.0.113.7', '', 'not an address']) expect(trust.vouched(peer, header), peer).toBeUndefined();
    expect(trust.vouched('127.0.0.1', createRelayTrust('0.0.0.0').header('203.0.113.7'))).toBeUndefined();
    expect(trust.vouched('127.0.0.1', `${header.split(' ')[0]} not-an-ip`)).toBeUndefined();
  });

  it('believes the node\'s own concrete address, which its relay dials when HOST names one', () => {
    const trust = createRelayTrust('10.0.0.5');
    expect(trust.vouched('10.0.0.5', trust.header('198.51.100.1'))).toBe('198.51.100.1');
    expect(trust.vouched('::ffff:10.0.0.5', trust.header('198.51.100.1'))).toBe('198.51.100.1');
    expect(trust.vouched('10.0.0.6', trust.header('198.51.100.1'))).toBeUndefined();
  });
});
