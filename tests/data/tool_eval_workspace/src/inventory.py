"""Core inventory helpers: load items, compute values, read config."""
import configparser
import csv
from dataclasses import dataclass

DEFAULT_THRESHOLD = 5


@dataclass
class Item:
    sku: str
    name: str
    category: str
    quantity: int
    unit_price: float


def load_items(path):
    """Read items from a CSV file and return a list of Item objects."""
    items = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            items.append(Item(
                sku=row["sku"],
                name=row["name"],
                category=row["category"],
                quantity=int(row["quantity"]),
                unit_price=float(row["unit_price"]),
            ))
    return items


def total_value(items):
    """Return the total stock value (quantity * unit price)."""
    return round(sum(i.quantity * i.unit_price for i in items), 2)


def low_stock(items, threshold=DEFAULT_THRESHOLD):
    """Return the items whose quantity is below the threshold."""
    return [i for i in items if i.quantity < threshold]


def parse_config(path):
    """Read the [inventory] section of a setup.cfg-style file."""
    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser["inventory"]
    return {
        "data_file": section.get("data_file", "data/items.csv"),
        "currency": section.get("currency", "EUR"),
        "low_stock_threshold": section.getint("low_stock_threshold", DEFAULT_THRESHOLD),
        "report_width": section.getint("report_width", 60),
    }
