// useQuery throws the error that ends a subscription (forbidden, not_found…),
// as Convex's does; a boundary shows it. useQueryState returns it instead.
import { Component, type ReactNode } from 'react';
import type { InvigilError } from '@invigil/invigil.js';

export class ErrorBoundary extends Component<{ children: ReactNode }, { error: InvigilError | null }> {
  state = { error: null as InvigilError | null };

  static getDerivedStateFromError(error: InvigilError) {
    return { error };
  }

  render() {
    const { error } = this.state;
    if (error) return <p id="error" data-code={error.code}>{error.message}</p>;
    return this.props.children;
  }
}
