"""Print a plain-text stock report."""
import argparse
from collections import Counter

from src.inventory import load_items, low_stock, parse_config, total_value


def format_report(items, currency="EUR", threshold=5, width=60):
    lines = ["STOCK REPORT".center(width, "=")]
    lines.append(f"Items: {len(items)}")
    lines.append(f"Total value: {total_value(items):.2f} {currency}")
    lines.append("-" * width)
    for category, count in sorted(Counter(i.category for i in items).items()):
        lines.append(f"{category:<20}{count:>5}")
    warnings = low_stock(items, threshold)
    if warnings:
        lines.append("-" * width)
        for item in warnings:
            lines.append(f"LOW STOCK: {item.sku} {item.name} ({item.quantity} left)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print the stock report")
    ap.add_argument("--config", default="setup.cfg")
    args = ap.parse_args(argv)
    cfg = parse_config(args.config)
    items = load_items(cfg["data_file"])
    print(format_report(items, cfg["currency"], cfg["low_stock_threshold"],
                        cfg["report_width"]))


if __name__ == "__main__":
    main()
