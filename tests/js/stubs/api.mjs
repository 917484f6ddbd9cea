export const api = globalThis.__janusTestApi;
