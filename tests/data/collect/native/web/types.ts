// A typed point.
export interface Point { x: number; y: number }
