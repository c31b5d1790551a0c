//! Presence for Phoenix Channels: who is on a topic, on which devices, with what
//! metadata. Pure data structures, no runtime: the presence state with its diffs,
//! the replicated tracker, and the collaborative-editing roles built on them.
