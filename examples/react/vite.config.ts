import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The kit lives in the repo's static/ (invigil.js, invigil-react.js and their
// .d.ts). The platform copies those four files into src/lib/invigil/; here an
// alias points at them instead, and `dedupe` makes the 'react' they import
// resolve to this app's copy (static/ has no node_modules of its own).
const kit = fileURLToPath(new URL('../../static', import.meta.url));

export default defineConfig({
  resolve: {
    alias: { '@invigil': kit },
    dedupe: ['react', 'react-dom'],
  },
  server: { fs: { allow: ['.', kit] } },
  build: { sourcemap: true },
});
