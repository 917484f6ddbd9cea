export const app = globalThis.__janusTestApp;
