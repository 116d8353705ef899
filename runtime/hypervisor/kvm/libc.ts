/** The KVM backend's libc bindings: the ones every backend shares. */
export * from "../libc.js";
