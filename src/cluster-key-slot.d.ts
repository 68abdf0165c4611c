/** Types for cluster-key-slot (ioredis' own slot hashing), which ships none. */
declare module 'cluster-key-slot' {
  /** The Redis Cluster slot (0-16383) of a key or channel, honouring `{hash tags}`. */
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
