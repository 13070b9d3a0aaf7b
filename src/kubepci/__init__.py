"""kubepci: prove a Kubernetes platform PCI DSS v4.0.1 compliant.

The package is one library with several front ends (CLI scan, admission webhook, exported
ValidatingAdmissionPolicies, audit trail). See DESIGN.md in the project's shared notes.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
